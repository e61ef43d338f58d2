//! Delivery of Web Push messages to push services, safe against SSRF (spec §12.2).
//!
//! The same rules hold when a subscription is registered ([`PushNetwork::check`]) and again at
//! every send ([`PushNetwork::send`]):
//! - the endpoint is an absolute `https` URL of at most [`MAX_ENDPOINT_LEN`] characters, without
//!   credentials (`user:password@`), on port 443 (explicit or not);
//! - when an allowlist of host suffixes is configured, the host is one of them or a subdomain of
//!   one (case-insensitive, whole labels: `evilpush.example` does not match `push.example`);
//! - a literal IP host must be a public address ([`ssrf::is_public`]); a name is resolved and
//!   EVERY address it resolves to must be public.
//!
//! At send time the address rule runs inside the HTTPS client's resolver, whose answer is the only
//! set of addresses the client connects to: what was checked is what is connected to (no DNS
//! rebinding between the check and the connect). The client keeps the URL's Host and SNI, follows
//! no redirect, uses no proxy, gives up after [`SEND_TIMEOUT`] and is pooled across sends.
//!
//! Tests may name one [`TrustedReceiver`]: a local HTTPS server exempt from the port and address
//! rules, for its exact host only.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use hickory_resolver::TokioResolver;

use crate::functions::ssrf;

/// The longest endpoint accepted, in characters.
pub const MAX_ENDPOINT_LEN: usize = 2048;
/// Bound of a send (connect, request and response) and of a lookup.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// The push message's time to live at the push service (RFC 8030 §5.2).
pub const TTL_SECS: u32 = 86_400;
/// At most this much of a push service's response body is read (so the connection can be reused).
const RESPONSE_DRAIN_BYTES: usize = 16 * 1024;

/// Resolves a host name to its addresses. `host` is lowercase, without a trailing dot and never
/// a literal IP. Errors are short reasons shown to the user.
pub trait HostResolver: Send + Sync {
    fn lookup<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, String>>;
}

/// The production resolver: the system's DNS configuration through hickory.
pub struct SystemResolver {
    resolver: Option<TokioResolver>,
}

impl SystemResolver {
    /// Reads the system configuration; when it cannot be read, every lookup fails (reported per
    /// lookup, never a start-up failure).
    pub fn new() -> SystemResolver {
        let resolver = TokioResolver::builder_tokio()
            .map_err(|e| tracing::warn!(error = %e, "system DNS configuration unreadable; Web Push cannot deliver"))
            .ok()
            .and_then(|mut builder| {
                builder.options_mut().timeout = SEND_TIMEOUT / 2;
                builder
                    .build()
                    .map_err(|e| tracing::warn!(error = %e, "DNS resolver unavailable; Web Push cannot deliver"))
                    .ok()
            });
        SystemResolver { resolver }
    }
}

impl Default for SystemResolver {
    fn default() -> Self {
        Self::new()
    }
}

impl HostResolver for SystemResolver {
    fn lookup<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, String>> {
        Box::pin(async move {
            let resolver = self.resolver.as_ref().ok_or("DNS is unavailable on this server")?;
            // A trailing dot makes the name absolute: no search domains are tried.
            let fqdn = format!("{}.", host.trim_end_matches('.'));
            match tokio::time::timeout(SEND_TIMEOUT, resolver.lookup_ip(fqdn)).await {
                Err(_) => Err("the DNS lookup timed out".to_string()),
                Ok(Err(e)) if e.is_no_records_found() || e.is_nx_domain() => {
                    Err("the domain does not resolve".to_string())
                }
                Ok(Err(_)) => Err("the DNS lookup failed".to_string()),
                Ok(Ok(lookup)) => {
                    let addrs: Vec<IpAddr> = lookup.iter().collect();
                    if addrs.is_empty() {
                        Err("the domain does not resolve".to_string())
                    } else {
                        Ok(addrs)
                    }
                }
            }
        })
    }
}

/// A local HTTPS receiver for tests: for `host` exactly, the URL port `addr.port()` is allowed
/// (instead of 443), the host resolves to `addr.ip()` without the public-address rule, and the
/// client also trusts `root_cert_pem`. The allowlist, when configured, still applies to it.
#[derive(Debug, Clone)]
pub struct TrustedReceiver {
    pub host: String,
    pub addr: SocketAddr,
    pub root_cert_pem: String,
}

/// Why an endpoint is refused; the message is shown to the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("the push endpoint is longer than 2048 characters")]
    TooLong,
    #[error("the push endpoint is not an absolute URL")]
    NotUrl,
    #[error("the push endpoint must use https")]
    NotHttps,
    #[error("the push endpoint must not contain credentials")]
    Credentials,
    #[error("the push endpoint must use port 443")]
    Port,
    #[error("the push endpoint's host is not an allowed push service")]
    NotAllowed,
    #[error("the push endpoint's host is not a public address")]
    NonPublicLiteral,
    #[error("the push endpoint's host resolves to a non-public address")]
    NonPublic,
    #[error("the push endpoint's host could not be resolved: {0}")]
    Unresolved(String),
}

/// Why a send did not get an HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The endpoint broke a rule at send time (nothing was sent).
    #[error("refused: {0}")]
    Refused(String),
    /// The network failed or timed out.
    #[error("failed: {0}")]
    Failed(String),
}

/// A URL's host, normalised: a lowercase name without a trailing dot, or an address.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    Name(String),
    Ip(IpAddr),
}

impl Host {
    /// The URL's host; the URL parser has already lowercased names and written addresses in
    /// canonical form (IPv6 in brackets).
    fn of_url(url: &reqwest::Url) -> Option<Host> {
        url.host_str().filter(|h| !h.is_empty()).map(Host::of_config)
    }

    /// A configured host: a name, an address, or a bracketed IPv6 address.
    fn of_config(s: &str) -> Host {
        let s = s.trim();
        let unbracketed = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')).unwrap_or(s);
        match unbracketed.parse::<IpAddr>() {
            Ok(ip) => Host::Ip(ip),
            Err(_) => Host::Name(normalize_name(s)),
        }
    }
}

fn normalize_name(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// The rules, shared by [`PushNetwork`] and its client's resolver.
struct Rules {
    resolver: Arc<dyn HostResolver>,
    /// Lowercase suffixes, without leading or trailing dots; empty: any host.
    allowlist: Vec<String>,
    trusted: Option<(Host, SocketAddr)>,
}

/// An endpoint that passed the URL rules.
struct Target {
    url: reqwest::Url,
    host: Host,
    trusted: bool,
}

impl Rules {
    fn new(resolver: Arc<dyn HostResolver>, allowlist: Vec<String>, trusted: Option<(Host, SocketAddr)>) -> Rules {
        let allowlist = allowlist
            .iter()
            .map(|s| s.trim().trim_matches('.').to_ascii_lowercase())
            .filter(|s| !s.is_empty())
            .collect();
        Rules {
            resolver,
            allowlist,
            trusted,
        }
    }

    /// The rules that need no lookup: length, URL form, scheme, credentials, port, allowlist.
    fn target(&self, endpoint: &str) -> Result<Target, EndpointError> {
        if endpoint.chars().count() > MAX_ENDPOINT_LEN {
            return Err(EndpointError::TooLong);
        }
        let url = reqwest::Url::parse(endpoint).map_err(|_| EndpointError::NotUrl)?;
        if url.scheme() != "https" {
            return Err(EndpointError::NotHttps);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(EndpointError::Credentials);
        }
        let host = Host::of_url(&url).ok_or(EndpointError::NotUrl)?;
        let trusted = self.trusted.as_ref().filter(|(h, _)| *h == host).map(|(_, a)| a.port());
        let port = url.port_or_known_default();
        match trusted {
            Some(allowed) if port != Some(allowed) => return Err(EndpointError::Port),
            None if port != Some(443) => return Err(EndpointError::Port),
            _ => {}
        }
        if !self.allowlist.is_empty() {
            let allowed = match &host {
                Host::Name(name) => self
                    .allowlist
                    .iter()
                    .any(|s| name == s || name.strip_suffix(s.as_str()).is_some_and(|p| p.ends_with('.'))),
                Host::Ip(_) => false,
            };
            if !allowed {
                return Err(EndpointError::NotAllowed);
            }
        }
        Ok(Target {
            url,
            host,
            trusted: trusted.is_some(),
        })
    }

    /// The addresses a host may be connected to: the trusted receiver's, a public literal, or a
    /// name's resolved addresses when every one is public. The port is left to the URL.
    async fn addresses(&self, host: &Host) -> Result<Vec<IpAddr>, EndpointError> {
        if let Some((trusted, addr)) = &self.trusted
            && trusted == host
        {
            return Ok(vec![addr.ip()]);
        }
        match host {
            Host::Ip(ip) if ssrf::is_public(*ip) => Ok(vec![*ip]),
            Host::Ip(_) => Err(EndpointError::NonPublicLiteral),
            Host::Name(name) => {
                let ips = tokio::time::timeout(SEND_TIMEOUT, self.resolver.lookup(name))
                    .await
                    .map_err(|_| EndpointError::Unresolved("the DNS lookup timed out".into()))?
                    .map_err(EndpointError::Unresolved)?;
                if ips.is_empty() {
                    return Err(EndpointError::Unresolved("the domain does not resolve".into()));
                }
                if ips.iter().any(|ip| !ssrf::is_public(*ip)) {
                    return Err(EndpointError::NonPublic);
                }
                Ok(ips)
            }
        }
    }
}

/// The HTTPS client's resolver: applies [`Rules::addresses`] to the name being connected to.
struct Pinned(Arc<Rules>);

/// A refusal by [`Pinned`], found again in the client's error chain.
#[derive(Debug)]
struct Refused(EndpointError);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Refused {}

impl reqwest::dns::Resolve for Pinned {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let rules = Arc::clone(&self.0);
        let host = Host::Name(normalize_name(name.as_str()));
        Box::pin(async move {
            let trusted = rules.trusted.as_ref().filter(|(h, _)| *h == host).map(|(_, a)| *a);
            let addrs: Vec<SocketAddr> = match trusted {
                Some(addr) => vec![addr],
                None => rules
                    .addresses(&host)
                    .await
                    .map_err(|e| Box::new(Refused(e)) as Box<dyn std::error::Error + Send + Sync>)?
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, 443))
                    .collect(),
            };
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Delivers push messages under the rules above. Cheap to clone (the client is shared).
#[derive(Clone)]
pub struct PushNetwork {
    rules: Arc<Rules>,
    http: Result<reqwest::Client, String>,
}

impl std::fmt::Debug for PushNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushNetwork")
            .field("allowlist", &self.rules.allowlist)
            .field("trusted", &self.rules.trusted)
            .field("http", &self.http.is_ok())
            .finish()
    }
}

impl PushNetwork {
    /// The production network: the system resolver, no trusted receiver. If the HTTPS client
    /// cannot be built, every send fails (logged once here).
    pub fn new(allowlist: Vec<String>) -> PushNetwork {
        let rules = Arc::new(Rules::new(Arc::new(SystemResolver::new()), allowlist, None));
        let http = client(&rules, None);
        if let Err(e) = &http {
            tracing::warn!(error = %e, "Web Push HTTPS client unavailable; pushes cannot be delivered");
        }
        PushNetwork { rules, http }
    }

    /// A network with a given resolver and, for tests, a trusted local receiver.
    pub fn with_resolver(
        resolver: Arc<dyn HostResolver>,
        allowlist: Vec<String>,
        receiver: Option<TrustedReceiver>,
    ) -> Result<PushNetwork, String> {
        let trusted = receiver.as_ref().map(|r| (Host::of_config(&r.host), r.addr));
        let rules = Arc::new(Rules::new(resolver, allowlist, trusted));
        let http = client(&rules, receiver.as_ref().map(|r| r.root_cert_pem.as_str()))?;
        Ok(PushNetwork { rules, http: Ok(http) })
    }

    /// Whether `endpoint` may be subscribed: every rule, including the lookup.
    pub async fn check(&self, endpoint: &str) -> Result<(), EndpointError> {
        let target = self.rules.target(endpoint)?;
        self.rules.addresses(&target.host).await.map(|_| ())
    }

    /// POSTs an encrypted message (`aes128gcm` body) to `endpoint` and returns the HTTP status.
    /// Every rule is applied again; the address rule runs in the client's resolver, so the
    /// connection goes only to the addresses checked. Redirects are not followed (a 3xx is
    /// returned as is).
    pub async fn send(&self, endpoint: &str, authorization: &str, body: Vec<u8>) -> Result<u16, SendError> {
        let target = self
            .rules
            .target(endpoint)
            .map_err(|e| SendError::Refused(e.to_string()))?;
        // The client does not resolve literal addresses: they are judged here.
        if let Host::Ip(_) = target.host
            && !target.trusted
        {
            self.rules
                .addresses(&target.host)
                .await
                .map_err(|e| SendError::Refused(e.to_string()))?;
        }
        let http = self.http.as_ref().map_err(|e| SendError::Failed(e.clone()))?;
        let exchange = async {
            let mut res = http
                .post(target.url)
                .header("TTL", TTL_SECS.to_string())
                .header("Urgency", "normal")
                .header(reqwest::header::CONTENT_ENCODING, "aes128gcm")
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .header(reqwest::header::AUTHORIZATION, authorization)
                .body(body)
                .send()
                .await
                .map_err(|e| describe(&e))?;
            let status = res.status().as_u16();
            // Read a small body to its end so the connection returns to the pool; a failure
            // here does not change the answer.
            let mut read = 0usize;
            while read <= RESPONSE_DRAIN_BYTES {
                match res.chunk().await {
                    Ok(Some(chunk)) => read += chunk.len(),
                    Ok(None) | Err(_) => break,
                }
            }
            Ok(status)
        };
        tokio::time::timeout(SEND_TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| Err(SendError::Failed("the push service did not answer in time".into())))
    }
}

/// The pooled HTTPS client, its resolver pinned to the rules.
fn client(rules: &Arc<Rules>, extra_root_pem: Option<&str>) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .dns_resolver(Pinned(Arc::clone(rules)))
        .https_only(true)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(SEND_TIMEOUT)
        .connect_timeout(SEND_TIMEOUT)
        .user_agent(concat!("alterego/", env!("CARGO_PKG_VERSION"), " (web push)"));
    if let Some(pem) = extra_root_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
            .map_err(|e| format!("the trusted receiver's certificate is not PEM: {e}"))?;
        if certs.is_empty() {
            return Err("the trusted receiver's PEM holds no certificate".into());
        }
        builder = builder.tls_certs_merge(certs);
    }
    builder
        .build()
        .map_err(|e| format!("the HTTPS client could not be built: {e}"))
}

/// A send failure: a refusal by the pinned resolver, or a network category.
fn describe(e: &reqwest::Error) -> SendError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(refused) = s.downcast_ref::<Refused>() {
            return SendError::Refused(refused.0.to_string());
        }
        source = s.source();
    }
    let reason = if e.is_timeout() {
        "the push service did not answer in time"
    } else if e.is_connect() {
        "could not connect to the push service"
    } else {
        "the push request failed"
    };
    SendError::Failed(reason.into())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    type Answer = Result<Vec<IpAddr>, String>;

    /// Answers per host, in order; the last answer repeats. Unknown hosts do not resolve.
    #[derive(Default)]
    struct Scripted {
        answers: Mutex<HashMap<String, Vec<Answer>>>,
        calls: AtomicUsize,
    }

    impl Scripted {
        fn with(entries: &[(&str, &[&str])]) -> Arc<Scripted> {
            let s = Scripted::default();
            for (host, ips) in entries {
                s.push(host, Ok(ips.iter().map(|ip| ip.parse().unwrap()).collect()));
            }
            Arc::new(s)
        }

        fn push(&self, host: &str, answer: Answer) {
            self.answers
                .lock()
                .unwrap()
                .entry(host.to_string())
                .or_default()
                .push(answer);
        }
    }

    impl HostResolver for Scripted {
        fn lookup<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, String>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let mut answers = self.answers.lock().unwrap();
            let answer = match answers.get_mut(host) {
                Some(list) if list.len() > 1 => list.remove(0),
                Some(list) => list[0].clone(),
                None => Err("the domain does not resolve".into()),
            };
            Box::pin(async move { answer })
        }
    }

    const PUBLIC: &str = "93.184.216.34";
    const RECEIVER_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBojCCAUegAwIBAgIUazp3L34u/BO2rx5lmkFUpjiymYwwCgYIKoZIzj0EAwIw
GDEWMBQGA1UEAwwNcmVjZWl2ZXIudGVzdDAgFw0yNjEyMDYxMDMwNDJaGA8yMTI2
MTExMjEwMzA0MlowGDEWMBQGA1UEAwwNcmVjZWl2ZXIudGVzdDBZMBMGByqGSM49
AgEGCCqGSM49AwEHA0IABCI/hckiq4i1riSymhNgnMdeuTcggu/x2g/toG3BCbPM
umfIumaDNN9q24QudKYtkB0neQPMRkZz3WI7/Ub/Ga6jbTBrMB0GA1UdDgQWBBQu
j5nw6UPtOQMNFJcrp9OEzsr9YDAfBgNVHSMEGDAWgBQuj5nw6UPtOQMNFJcrp9OE
zsr9YDAPBgNVHRMBAf8EBTADAQH/MBgGA1UdEQQRMA+CDXJlY2VpdmVyLnRlc3Qw
CgYIKoZIzj0EAwIDSQAwRgIhAKZs5rf2I5Ilbhd5F3KkBs73di/zCc9QpMB1jnIq
KSn8AiEArHAp93X4ip8lz13+E8m5hlnvuSgjs/jYl4Hbsr9YcMU=
-----END CERTIFICATE-----
";

    fn network(resolver: Arc<Scripted>, allowlist: &[&str]) -> PushNetwork {
        PushNetwork::with_resolver(resolver, allowlist.iter().map(|s| s.to_string()).collect(), None).unwrap()
    }

    fn public_everywhere() -> Arc<Scripted> {
        Scripted::with(&[
            ("push.example.com", &[PUBLIC]),
            ("updates.push.services.mozilla.com", &[PUBLIC]),
            ("push.services.mozilla.com", &[PUBLIC]),
            ("evilpush.services.mozilla.com", &[PUBLIC]),
            ("fcm.googleapis.com", &[PUBLIC, "2a00:1450:4001:80b::200a"]),
            ("fcm.googleapis.com.evil.com", &[PUBLIC]),
        ])
    }

    #[tokio::test]
    async fn url_rules() {
        let net = network(public_everywhere(), &[]);
        assert_eq!(net.check("https://push.example.com/wpush/abc").await, Ok(()));
        assert_eq!(net.check("https://push.example.com:443/wpush/abc").await, Ok(()));
        assert_eq!(net.check("https://PUSH.example.com./x").await, Ok(()));
        assert_eq!(
            net.check("http://push.example.com/x").await,
            Err(EndpointError::NotHttps)
        );
        assert_eq!(
            net.check("wss://push.example.com/x").await,
            Err(EndpointError::NotHttps)
        );
        assert_eq!(
            net.check("https://push.example.com:8443/x").await,
            Err(EndpointError::Port)
        );
        assert_eq!(
            net.check("https://push.example.com:80/x").await,
            Err(EndpointError::Port)
        );
        // Credentials in the URL are refused (reqwest would turn them into Basic authorization).
        assert_eq!(
            net.check("https://user:pw@push.example.com/x").await,
            Err(EndpointError::Credentials)
        );
        assert_eq!(
            net.check("https://user@push.example.com/x").await,
            Err(EndpointError::Credentials)
        );
        for not_url in ["", "push.example.com/x", "/wpush/abc", "https://"] {
            assert_eq!(net.check(not_url).await, Err(EndpointError::NotUrl), "{not_url}");
        }
        let base = "https://push.example.com/";
        let longest = format!("{base}{}", "a".repeat(MAX_ENDPOINT_LEN - base.len()));
        assert_eq!(net.check(&longest).await, Ok(()));
        assert_eq!(net.check(&format!("{longest}a")).await, Err(EndpointError::TooLong));
        assert_eq!(EndpointError::NotHttps.to_string(), "the push endpoint must use https");
    }

    #[tokio::test]
    async fn allowlist_matches_whole_label_suffixes() {
        let net = network(
            public_everywhere(),
            &["push.services.mozilla.com", " FCM.googleapis.com. ", ""],
        );
        for ok in [
            "https://updates.push.services.mozilla.com/wpush/v2/abc",
            "https://push.services.mozilla.com/wpush/v1/abc",
            "https://fcm.googleapis.com/fcm/send/abc",
            "https://FCM.GoogleAPIs.com./fcm/send/abc",
        ] {
            assert_eq!(net.check(ok).await, Ok(()), "{ok}");
        }
        for refused in [
            "https://evilpush.services.mozilla.com/wpush/v2/abc",
            "https://fcm.googleapis.com.evil.com/x",
            "https://push.example.com/x",
            "https://93.184.216.34/x",
        ] {
            assert_eq!(net.check(refused).await, Err(EndpointError::NotAllowed), "{refused}");
        }
        // Without an allowlist the same hosts are fine.
        let open = network(public_everywhere(), &[]);
        assert_eq!(open.check("https://evilpush.services.mozilla.com/x").await, Ok(()));
    }

    #[tokio::test]
    async fn every_resolved_address_must_be_public() {
        let resolver = Scripted::with(&[
            ("loopback.test", &["127.0.0.1"]),
            ("private.test", &["10.0.0.1"]),
            ("mixed.test", &[PUBLIC, "10.0.0.1"]),
            ("mapped.test", &["::ffff:127.0.0.1"]),
            ("metadata.test", &["169.254.169.254"]),
            ("public.test", &[PUBLIC, "2606:4700:4700::1111"]),
            ("empty.test", &[]),
        ]);
        resolver.push("broken.test", Err("the DNS lookup failed".into()));
        let net = network(resolver, &[]);
        for host in [
            "loopback.test",
            "private.test",
            "mixed.test",
            "mapped.test",
            "metadata.test",
        ] {
            assert_eq!(
                net.check(&format!("https://{host}/x")).await,
                Err(EndpointError::NonPublic),
                "{host}"
            );
        }
        assert_eq!(net.check("https://public.test/x").await, Ok(()));
        assert_eq!(
            net.check("https://empty.test/x").await,
            Err(EndpointError::Unresolved("the domain does not resolve".into()))
        );
        assert_eq!(
            net.check("https://unknown.test/x").await,
            Err(EndpointError::Unresolved("the domain does not resolve".into()))
        );
        let err = net.check("https://broken.test/x").await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "the push endpoint's host could not be resolved: the DNS lookup failed"
        );
        assert_eq!(
            EndpointError::NonPublic.to_string(),
            "the push endpoint's host resolves to a non-public address"
        );
    }

    #[tokio::test]
    async fn literal_addresses_are_judged_directly() {
        let resolver = Scripted::with(&[]);
        let net = network(Arc::clone(&resolver), &[]);
        for refused in [
            "https://127.0.0.1/",
            "https://[::1]/",
            "https://10.0.0.1/x",
            "https://169.254.169.254/latest",
            "https://[::ffff:192.168.0.1]/",
            "https://0x7f000001/",
        ] {
            assert_eq!(
                net.check(refused).await,
                Err(EndpointError::NonPublicLiteral),
                "{refused}"
            );
        }
        assert_eq!(net.check("https://93.184.216.34/x").await, Ok(()));
        assert_eq!(net.check("https://[2606:4700:4700::1111]/x").await, Ok(()));
        assert_eq!(resolver.calls.load(Ordering::SeqCst), 0, "literals are never looked up");
    }

    fn with_receiver(resolver: Arc<Scripted>, allowlist: &[&str]) -> PushNetwork {
        PushNetwork::with_resolver(
            resolver,
            allowlist.iter().map(|s| s.to_string()).collect(),
            Some(TrustedReceiver {
                host: "receiver.test".into(),
                addr: "127.0.0.1:8443".parse().unwrap(),
                root_cert_pem: RECEIVER_PEM.into(),
            }),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn the_trusted_receiver_exemption_is_for_its_exact_host_and_port() {
        // The scripted resolver would answer loopback for every host; only the receiver is exempt.
        let resolver = Scripted::with(&[
            ("receiver.test", &["127.0.0.1"]),
            ("sub.receiver.test", &["127.0.0.1"]),
            ("other.test", &["127.0.0.1"]),
        ]);
        let net = with_receiver(Arc::clone(&resolver), &[]);
        assert_eq!(net.check("https://receiver.test:8443/push/1").await, Ok(()));
        assert_eq!(net.check("https://RECEIVER.test.:8443/push/1").await, Ok(()));
        assert_eq!(
            resolver.calls.load(Ordering::SeqCst),
            0,
            "the receiver is not looked up"
        );
        assert_eq!(
            net.check("https://receiver.test/push/1").await,
            Err(EndpointError::Port)
        );
        assert_eq!(
            net.check("https://receiver.test:9443/push/1").await,
            Err(EndpointError::Port)
        );
        assert_eq!(
            net.check("http://receiver.test:8443/push/1").await,
            Err(EndpointError::NotHttps)
        );
        assert_eq!(
            net.check("https://sub.receiver.test:8443/").await,
            Err(EndpointError::Port)
        );
        assert_eq!(net.check("https://other.test:8443/").await, Err(EndpointError::Port));
        assert_eq!(net.check("https://127.0.0.1:8443/").await, Err(EndpointError::Port));
        assert_eq!(
            net.check("https://sub.receiver.test/").await,
            Err(EndpointError::NonPublic)
        );
        assert_eq!(net.check("https://other.test/").await, Err(EndpointError::NonPublic));
        assert_eq!(
            net.check("https://127.0.0.1/").await,
            Err(EndpointError::NonPublicLiteral)
        );
        // The allowlist still applies to the receiver.
        let listed = with_receiver(Scripted::with(&[]), &["push.example.com"]);
        assert_eq!(
            listed.check("https://receiver.test:8443/push/1").await,
            Err(EndpointError::NotAllowed)
        );
    }

    #[test]
    fn a_receiver_certificate_must_be_pem() {
        let bad = PushNetwork::with_resolver(
            Scripted::with(&[]),
            vec![],
            Some(TrustedReceiver {
                host: "receiver.test".into(),
                addr: "127.0.0.1:8443".parse().unwrap(),
                root_cert_pem: "not a certificate".into(),
            }),
        );
        assert!(bad.is_err());
    }

    #[tokio::test]
    async fn send_applies_the_rules_again_and_pins_the_lookup() {
        // A host that answered a public address at subscribe time and loopback afterwards (DNS
        // rebinding): the send's own lookup is the one checked, and it refuses before connecting.
        let resolver = Scripted::with(&[("rebind.test", &[PUBLIC]), ("private.test", &["10.0.0.1"])]);
        resolver.push("rebind.test", Ok(vec!["127.0.0.1".parse().unwrap()]));
        let net = network(Arc::clone(&resolver), &[]);
        assert_eq!(net.check("https://rebind.test/push").await, Ok(()));
        let refused = |msg: &str| Err(SendError::Refused(msg.into()));
        assert_eq!(
            net.send("https://rebind.test/push", "vapid t=x, k=y", vec![1, 2, 3])
                .await,
            refused("the push endpoint's host resolves to a non-public address")
        );
        assert_eq!(resolver.calls.load(Ordering::SeqCst), 2);
        assert_eq!(
            net.send("https://private.test/push", "a", vec![]).await,
            refused("the push endpoint's host resolves to a non-public address")
        );
        assert_eq!(
            net.send("https://127.0.0.1/push", "a", vec![]).await,
            refused("the push endpoint's host is not a public address")
        );
        assert_eq!(
            net.send("https://[::1]/push", "a", vec![]).await,
            refused("the push endpoint's host is not a public address")
        );
        assert_eq!(
            net.send("http://public.test/push", "a", vec![]).await,
            refused("the push endpoint must use https")
        );
        assert_eq!(
            net.send("https://rebind.test:8443/push", "a", vec![]).await,
            refused("the push endpoint must use port 443")
        );
        assert_eq!(
            net.send("https://nowhere.test/push", "a", vec![]).await,
            refused("the push endpoint's host could not be resolved: the domain does not resolve")
        );
    }

    #[tokio::test]
    async fn the_receiver_is_connected_to_at_its_address_with_its_name_as_sni() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let net = PushNetwork::with_resolver(
            Scripted::with(&[]),
            vec![],
            Some(TrustedReceiver {
                host: "receiver.test".into(),
                addr,
                root_cert_pem: RECEIVER_PEM.into(),
            }),
        )
        .unwrap();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut hello = vec![0u8; 2048];
            let n = socket.read(&mut hello).await.unwrap();
            hello.truncate(n);
            hello
        });
        let endpoint = format!("https://receiver.test:{}/push/1", addr.port());
        // The server hangs up after the ClientHello: the send fails, it is not refused.
        let sent = net.send(&endpoint, "a", vec![1]).await;
        assert!(matches!(sent, Err(SendError::Failed(_))), "{sent:?}");
        let hello = server.await.unwrap();
        assert_eq!(hello.first(), Some(&0x16), "a TLS handshake record");
        assert!(
            hello.windows(b"receiver.test".len()).any(|w| w == b"receiver.test"),
            "the SNI is the URL's host"
        );
    }

    #[tokio::test]
    async fn the_system_resolver_refuses_localhost() {
        let net = PushNetwork::new(vec![]);
        assert_eq!(net.check("https://localhost/push").await, Err(EndpointError::NonPublic));
        assert_eq!(
            net.send("https://localhost/push", "a", vec![]).await,
            Err(SendError::Refused(
                "the push endpoint's host resolves to a non-public address".into()
            ))
        );
    }
}
