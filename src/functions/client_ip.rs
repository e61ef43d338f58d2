//! The client IP used as a rate-limit key (spec §11.4).
//!
//! The TCP peer is the only address that cannot be forged. `X-Forwarded-For`
//! is honoured only when the peer is a trusted proxy, and then only as far as
//! the chain of trusted proxies reaches: reading right to left, each hop was
//! appended by the proxy after it, so the first untrusted hop is the client as
//! the outermost trusted proxy saw it. Anything left of that is client
//! controlled and ignored. `X-Real-IP` and `Forwarded` are not used.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// The client IP: the TCP peer, unless the peer is a trusted proxy, in which
/// case `X-Forwarded-For` is read right to left, skipping trusted proxies; the
/// first untrusted address wins.
///
/// * A malformed entry stops the walk and the last trusted hop seen is used:
///   garbage is not trusted, and whatever lies left of it is forgeable.
/// * If every hop is trusted, the leftmost is used.
/// * `forwarded_for` may be several headers joined with `", "`; empty entries
///   are skipped. Entries may carry a port (`1.2.3.4:80`, `[::1]:80`).
/// * IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`), as a dual-stack listener
///   reports IPv4 peers, are treated as the IPv4 address.
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    let Some(header) = forwarded_for else {
        return peer;
    };
    if !is_trusted(peer, trusted) {
        return peer;
    }
    let mut last_trusted = peer;
    for entry in header.rsplit(',') {
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        let Some(hop) = parse_hop(entry) else {
            return last_trusted;
        };
        if !is_trusted(hop, trusted) {
            return hop;
        }
        last_trusted = hop;
    }
    last_trusted
}

/// Parses a `TRUSTED_PROXIES` value: comma-separated CIDRs or bare IPs (a bare
/// IP is a /32 or /128). Spaces and empty entries are ignored, so an empty
/// value trusts nobody. The error names the bad entry.
pub fn parse_trusted_proxies(s: &str) -> Result<Vec<IpNet>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                .map(|net| net.trunc())
                .map_err(|_| format!("invalid entry {entry:?}: expected an IP address or a CIDR such as 10.0.0.0/8"))
        })
        .collect()
}

/// Whether `ip` (canonical form) is in one of the trusted networks. A v4
/// address also matches a network written in IPv4-mapped IPv6 form.
fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    let mapped = match ip {
        IpAddr::V4(v4) => Some(IpAddr::V6(v4.to_ipv6_mapped())),
        IpAddr::V6(_) => None,
    };
    trusted
        .iter()
        .any(|net| net.contains(&ip) || mapped.is_some_and(|m| net.contains(&m)))
}

/// One `X-Forwarded-For` hop: an address, optionally with a port
/// (`1.2.3.4:80`, `[2001:db8::1]:80`, `[2001:db8::1]`). Returns the canonical
/// address, or `None` for anything else (`unknown`, obfuscated identifiers,
/// garbage).
fn parse_hop(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Some(rest) = entry.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !(after.is_empty() || is_port_suffix(after)) {
            return None;
        }
        return inside.parse::<Ipv6Addr>().ok().map(|ip| IpAddr::V6(ip).to_canonical());
    }
    let (host, port) = entry.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

/// `:<port>` with a decimal port.
fn is_port_suffix(s: &str) -> bool {
    s.strip_prefix(':').is_some_and(|port| port.parse::<u16>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test ip")
    }

    fn nets(s: &str) -> Vec<IpNet> {
        parse_trusted_proxies(s).expect("test nets")
    }

    #[test]
    fn client_ip_table() {
        let proxies = "10.0.0.0/8, 192.168.1.1, fd00::/8";
        // (peer, X-Forwarded-For, trusted, expected, why)
        let cases: &[(&str, Option<&str>, &str, &str, &str)] = &[
            ("203.0.113.9", None, "", "203.0.113.9", "no header, no proxies"),
            (
                "203.0.113.9",
                Some("1.1.1.1"),
                "",
                "203.0.113.9",
                "nobody trusted: header ignored",
            ),
            (
                "203.0.113.9",
                Some("1.1.1.1"),
                proxies,
                "203.0.113.9",
                "untrusted peer: header ignored",
            ),
            ("10.0.0.1", None, proxies, "10.0.0.1", "trusted peer without header"),
            ("10.0.0.1", Some(""), proxies, "10.0.0.1", "trusted peer, empty header"),
            ("10.0.0.1", Some("1.1.1.1"), proxies, "1.1.1.1", "one proxy"),
            (
                "10.0.0.1",
                Some("6.6.6.6, 1.1.1.1"),
                proxies,
                "1.1.1.1",
                "spoofed left hop ignored",
            ),
            (
                "10.0.0.1",
                Some("6.6.6.6, 1.1.1.1, 10.2.3.4"),
                proxies,
                "1.1.1.1",
                "two proxies",
            ),
            (
                "10.0.0.1",
                Some("6.6.6.6,1.1.1.1,192.168.1.1"),
                proxies,
                "1.1.1.1",
                "no spaces",
            ),
            (
                "10.0.0.1",
                Some("  1.1.1.1 ,  10.2.3.4  "),
                proxies,
                "1.1.1.1",
                "extra spaces",
            ),
            (
                "10.0.0.1",
                Some("1.1.1.1, , 10.2.3.4"),
                proxies,
                "1.1.1.1",
                "empty entry skipped",
            ),
            (
                "10.0.0.1",
                Some("10.9.9.9, 10.2.3.4"),
                proxies,
                "10.9.9.9",
                "all trusted: leftmost",
            ),
            (
                "10.0.0.1",
                Some("6.6.6.6, garbage, 10.2.3.4"),
                proxies,
                "10.2.3.4",
                "garbage: last trusted hop",
            ),
            (
                "10.0.0.1",
                Some("6.6.6.6, unknown"),
                proxies,
                "10.0.0.1",
                "garbage next to peer: peer",
            ),
            (
                "10.0.0.1",
                Some("1.1.1.1, 300.1.1.1"),
                proxies,
                "10.0.0.1",
                "out of range octet",
            ),
            ("10.0.0.1", Some("1.1.1.1:5555"), proxies, "1.1.1.1", "v4 with port"),
            ("10.0.0.1", Some("1.1.1.1:99999"), proxies, "10.0.0.1", "bad port"),
            ("10.0.0.1", Some("2001:db8::1"), proxies, "2001:db8::1", "v6 hop"),
            (
                "10.0.0.1",
                Some("[2001:db8::1]:443"),
                proxies,
                "2001:db8::1",
                "bracketed v6 with port",
            ),
            (
                "10.0.0.1",
                Some("[2001:db8::1]"),
                proxies,
                "2001:db8::1",
                "bracketed v6",
            ),
            (
                "10.0.0.1",
                Some("[2001:db8::1]x"),
                proxies,
                "10.0.0.1",
                "junk after bracket",
            ),
            (
                "10.0.0.1",
                Some("fe80::1%eth0"),
                proxies,
                "10.0.0.1",
                "zone id is malformed",
            ),
            (
                "fd00::5",
                Some("2001:db8::7, fd00::9"),
                proxies,
                "2001:db8::7",
                "v6 proxies",
            ),
            (
                "::ffff:10.0.0.1",
                Some("1.1.1.1"),
                proxies,
                "1.1.1.1",
                "mapped trusted peer",
            ),
            (
                "::ffff:203.0.113.9",
                Some("1.1.1.1"),
                proxies,
                "203.0.113.9",
                "mapped untrusted peer is unmapped",
            ),
            (
                "10.0.0.1",
                Some("::ffff:1.1.1.1"),
                proxies,
                "1.1.1.1",
                "mapped hop is unmapped",
            ),
            (
                "10.0.0.1",
                Some("1.1.1.1, ::ffff:10.2.3.4"),
                proxies,
                "1.1.1.1",
                "mapped trusted hop skipped",
            ),
            (
                "::ffff:10.0.0.1",
                Some("1.1.1.1"),
                "::ffff:10.0.0.0/104",
                "1.1.1.1",
                "mapped CIDR trusts v4 peer",
            ),
            (
                "10.0.0.1",
                Some("1.1.1.1"),
                "0.0.0.0/0",
                "1.1.1.1",
                "trust-all v4: leftmost",
            ),
        ];
        for &(peer, header, trusted, expected, why) in cases {
            let got = client_ip(ip(peer), header, &nets(trusted));
            assert_eq!(
                got,
                ip(expected),
                "{why}: peer {peer}, XFF {header:?}, trusted {trusted:?}"
            );
        }
    }

    #[test]
    fn parse_trusted_proxies_table() {
        let ok: &[(&str, &[&str])] = &[
            ("", &[]),
            ("  ", &[]),
            ("10.0.0.0/8", &["10.0.0.0/8"]),
            ("10.1.2.3/8", &["10.0.0.0/8"]),
            ("127.0.0.1", &["127.0.0.1/32"]),
            ("::1", &["::1/128"]),
            (
                " 10.0.0.0/8 , fd00::/8,192.168.0.1 ,",
                &["10.0.0.0/8", "fd00::/8", "192.168.0.1/32"],
            ),
        ];
        for &(input, expected) in ok {
            let got = parse_trusted_proxies(input).expect("valid input");
            let expected: Vec<IpNet> = expected.iter().map(|n| n.parse().expect("test net")).collect();
            assert_eq!(got, expected, "{input:?}");
        }

        let bad: &[(&str, &str)] = &[
            ("not-a-cidr", "\"not-a-cidr\""),
            ("10.0.0.0/8, 10.0.0.0/33", "\"10.0.0.0/33\""),
            ("10.0.0.0/8; 1.2.3.4", "\"10.0.0.0/8; 1.2.3.4\""),
            ("localhost", "\"localhost\""),
        ];
        for &(input, named) in bad {
            let err = parse_trusted_proxies(input).expect_err("invalid input");
            assert!(err.contains(named), "{input:?}: {err}");
        }
    }
}
