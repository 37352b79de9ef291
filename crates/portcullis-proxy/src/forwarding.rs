//! The trust boundary for `X-Forwarded-*`.
//!
//! A client can put anything in `X-Forwarded-For`, `-Proto` and `-Host`. Portcullis
//! believes them only when the TCP peer is one of the configured trusted proxies (a load
//! balancer or ingress in front of it); from anyone else they are replaced by what
//! Portcullis itself observed. The client address is the rightmost address in the chain
//! that is not a trusted proxy: everything left of it could have been written by the
//! client. `Forwarded` (RFC 7239) and `X-Real-IP` from an untrusted peer are dropped.
//!
//! The `Host` sent upstream follows one rule, the same for HTTP/1 and HTTP/2 clients: the
//! upstream's own authority (as nginx's `proxy_pass` does), or, with
//! `upstream.preserve_host`, the host the client asked for. The client's host always goes
//! upstream as `X-Forwarded-Host`.

use std::net::{IpAddr, SocketAddr};

use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Uri};
use ipnet::IpNet;

use crate::hop::Names;
use crate::upstream::Added;

pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(crate) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(crate) const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub(crate) const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");

/// Headers that say where a request was originally going or who sent it, which some
/// frameworks believe (Spring's `ForwardedHeaderFilter`, IIS URL Rewrite, Symfony, the
/// client-address headers of CDNs that libraries read before `X-Forwarded-For`): from an
/// untrusted peer they are the client's invention, and are dropped before the request
/// goes upstream. (`portcullis check --live` found `True-Client-IP` passing.)
static UNTRUSTED_CLAIMS: Names<16> = Names::new([
    "forwarded",
    "x-real-ip",
    "x-forwarded-uri",
    "x-forwarded-prefix",
    "x-forwarded-port",
    "x-forwarded-server",
    "x-forwarded-ssl",
    "x-original-url",
    "x-rewrite-url",
    "x-original-host",
    "true-client-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-original-forwarded-for",
]);

#[derive(Debug, Clone, Default)]
pub(crate) struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub(crate) fn new(nets: Vec<IpNet>) -> Self {
        TrustedProxies(nets)
    }

    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `::ffff:10.0.0.1` is 10.0.0.1.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// What the request looks like from outside, after applying the trust boundary.
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    pub client_ip: IpAddr,
    /// `http` or `https`.
    pub proto: &'static str,
    /// The host the client asked for (`Host`, or the HTTP/2 `:authority`).
    pub host: Option<HeaderValue>,
    /// The `X-Forwarded-For` value to send on.
    pub forwarded_for: HeaderValue,
    /// Whether the peer is a trusted proxy.
    pub via_trusted_proxy: bool,
}

fn first_value<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// The host the client addressed, as HTTP/1 (`Host`) or HTTP/2 (`:authority`) carries it.
pub(crate) fn requested_host(headers: &HeaderMap, uri: &Uri) -> Option<HeaderValue> {
    headers.get(header::HOST).cloned().or_else(|| {
        uri.authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    })
}

pub(crate) fn resolve(
    peer: SocketAddr,
    tls: bool,
    headers: &HeaderMap,
    uri: &Uri,
    trusted: &TrustedProxies,
) -> Origin {
    let peer_ip = canonical(peer.ip());
    let own_proto = if tls { "https" } else { "http" };
    if trusted.is_empty() || !trusted.contains(peer_ip) {
        return Origin {
            client_ip: peer_ip,
            proto: own_proto,
            host: requested_host(headers, uri),
            forwarded_for: ip_value(peer_ip),
            via_trusted_proxy: false,
        };
    }
    // A trusted proxy: extend its chain, and find the first untrusted hop from the right.
    let chain: Vec<IpAddr> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| parse_ip(s.trim()))
        .collect();
    let client_ip = chain
        .iter()
        .rev()
        .copied()
        .find(|ip| !trusted.contains(*ip))
        .or_else(|| chain.first().copied())
        .unwrap_or(peer_ip);
    let mut forwarded_for = chain
        .iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if !forwarded_for.is_empty() {
        forwarded_for.push_str(", ");
    }
    forwarded_for.push_str(&peer_ip.to_string());
    let proto = match first_value(headers, &X_FORWARDED_PROTO) {
        Some(p) if p.eq_ignore_ascii_case("https") => "https",
        Some(p) if p.eq_ignore_ascii_case("http") => "http",
        _ => own_proto,
    };
    // A trusted proxy's X-Forwarded-Host is believed only if it is a host at all.
    let host = first_value(headers, &X_FORWARDED_HOST)
        .filter(|h| crate::normalize::valid_host(h.as_bytes()))
        .and_then(|h| HeaderValue::from_str(h).ok())
        .or_else(|| requested_host(headers, uri));
    Origin {
        client_ip,
        proto,
        host,
        forwarded_for: HeaderValue::from_str(&forwarded_for).unwrap_or_else(|_| ip_value(peer_ip)),
        via_trusted_proxy: true,
    }
}

/// Whether a trusted proxy sent an `X-Forwarded-For` that is not a list of addresses. The
/// client address would then be a guess, so the request is refused rather than decided
/// on a wrong one (authentik CVE-2024-47070 was such a guess). An untrusted peer's
/// header is never read, so it cannot be malformed in this sense.
pub(crate) fn unparsable_chain(
    peer: SocketAddr,
    headers: &HeaderMap,
    trusted: &TrustedProxies,
) -> bool {
    if trusted.is_empty() || !trusted.contains(peer.ip()) {
        return false;
    }
    headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .any(|v| match v.to_str() {
            Ok(v) => v.split(',').any(|hop| parse_ip(hop.trim()).is_none()),
            Err(_) => true,
        })
}

/// `1.2.3.4`, `1.2.3.4:5678`, `[::1]:80` or `::1`.
fn parse_ip(s: &str) -> Option<IpAddr> {
    s.parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .map(canonical)
}

/// The address as a header value. The last one written on this thread is kept: the
/// requests of a keep-alive connection (or of a proxy in front) come from one address, and
/// formatting it is a good part of a request's forwarding work.
fn ip_value(ip: IpAddr) -> HeaderValue {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(IpAddr, HeaderValue)>> =
            const { std::cell::RefCell::new(None) };
    }
    LAST.with_borrow_mut(|last| match last {
        Some((seen, value)) if *seen == ip => value.clone(),
        _ => {
            let value = HeaderValue::from_str(&ip.to_string())
                .expect("an IP address is a valid header value");
            *last = Some((ip, value.clone()));
            value
        }
    })
}

/// The fields Portcullis writes itself, whatever the client sent under their names.
static RESOLVED: Names<3> =
    Names::new(["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"]);

/// Replaces the client's forwarding headers with the resolved ones: the client's copies
/// (a trusted proxy's chain is already in `origin`) leave `headers`, the resolved values
/// go to `added`.
pub(crate) fn apply(headers: &mut HeaderMap, origin: &Origin, added: &mut Added) {
    if !origin.via_trusted_proxy {
        UNTRUSTED_CLAIMS.remove_from(headers);
    }
    RESOLVED.remove_from(headers);
    added.push(X_FORWARDED_FOR, origin.forwarded_for.clone());
    added.push(X_FORWARDED_PROTO, HeaderValue::from_static(origin.proto));
    if let Some(host) = &origin.host {
        added.push(X_FORWARDED_HOST, host.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kept_address_value_is_always_the_address_asked_for() {
        for ip in [
            "192.0.2.1",
            "192.0.2.1",
            "2001:db8::1",
            "192.0.2.1",
            "10.0.0.7",
        ] {
            assert_eq!(ip_value(ip.parse().unwrap()), ip);
        }
    }

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 40000)
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn trusted() -> TrustedProxies {
        TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap()])
    }

    #[test]
    fn an_untrusted_peer_cannot_forge_its_address_scheme_or_host() {
        let h = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "bank.example.com"),
            ("host", "app.example.com"),
        ]);
        let o = resolve(
            peer("203.0.113.9"),
            false,
            &h,
            &Uri::from_static("/"),
            &trusted(),
        );
        assert_eq!(o.client_ip.to_string(), "203.0.113.9");
        assert_eq!(o.proto, "http");
        assert_eq!(o.host.unwrap(), "app.example.com");
        assert_eq!(o.forwarded_for, "203.0.113.9");
    }

    #[test]
    fn a_trusted_proxy_is_believed_and_its_chain_extended() {
        let h = headers(&[
            ("x-forwarded-for", "198.51.100.7, 10.1.1.1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "app.example.com"),
        ]);
        let o = resolve(
            peer("10.0.0.2"),
            false,
            &h,
            &Uri::from_static("/"),
            &trusted(),
        );
        assert_eq!(o.client_ip.to_string(), "198.51.100.7");
        assert_eq!(o.proto, "https");
        assert_eq!(o.host.unwrap(), "app.example.com");
        assert_eq!(o.forwarded_for, "198.51.100.7, 10.1.1.1, 10.0.0.2");
    }

    #[test]
    fn the_client_is_the_rightmost_untrusted_hop() {
        // The client prepended a fake address; the load balancer appended the real one.
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7")]);
        let o = resolve(
            peer("10.0.0.2"),
            false,
            &h,
            &Uri::from_static("/"),
            &trusted(),
        );
        assert_eq!(o.client_ip.to_string(), "198.51.100.7");
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_ranges() {
        let o = resolve(
            peer("::ffff:10.0.0.2"),
            true,
            &HeaderMap::new(),
            &Uri::from_static("/"),
            &trusted(),
        );
        assert!(o.via_trusted_proxy);
        assert_eq!(o.proto, "https");
    }

    #[test]
    fn http2_authority_counts_as_the_host() {
        let uri: Uri = "https://app.example.com/x".parse().unwrap();
        let o = resolve(
            peer("203.0.113.9"),
            true,
            &HeaderMap::new(),
            &uri,
            &trusted(),
        );
        assert_eq!(o.host.unwrap(), "app.example.com");
    }

    #[test]
    fn apply_drops_forwarded_headers_of_untrusted_peers() {
        let mut h = headers(&[
            ("forwarded", "for=1.1.1.1"),
            ("x-real-ip", "1.1.1.1"),
            ("x-forwarded-uri", "/admin"),
            ("x-forwarded-prefix", "/evil"),
            ("x-original-url", "/admin"),
            ("x-rewrite-url", "/admin"),
            ("x-forwarded-port", "8443"),
            ("true-client-ip", "1.1.1.1"),
            ("cf-connecting-ip", "1.1.1.1"),
        ]);
        let o = resolve(
            peer("203.0.113.9"),
            false,
            &h,
            &Uri::from_static("/"),
            &trusted(),
        );
        let mut added = Added::default();
        apply(&mut h, &o, &mut added);
        added.apply_to(&mut h);
        assert!(h.get("forwarded").is_none());
        assert!(h.get("x-real-ip").is_none());
        assert!(h.get("x-forwarded-uri").is_none());
        for name in [
            "true-client-ip",
            "cf-connecting-ip",
            "x-forwarded-prefix",
            "x-original-url",
            "x-rewrite-url",
            "x-forwarded-port",
        ] {
            assert!(
                h.get(name).is_none(),
                "{name} passed from an untrusted peer"
            );
        }
        assert_eq!(h["x-forwarded-for"], "203.0.113.9");
    }

    #[test]
    fn each_claim_alone_is_dropped_and_fields_of_the_same_length_stay() {
        let claims = UNTRUSTED_CLAIMS.names().iter().chain(RESOLVED.names());
        // Names as long as a claim (accept-encoding and x-forwarded-uri are 15 bytes).
        let bystanders = [
            ("accept-encoding", "gzip"),
            ("x-forwarded-urx", "kept"),
            ("content-type", "text/plain"),
            ("x-real-ipv", "kept"),
        ];
        let o = resolve(
            peer("203.0.113.9"),
            false,
            &HeaderMap::new(),
            &Uri::from_static("/"),
            &trusted(),
        );
        for claim in claims {
            let claim = claim.as_str();
            let mut fields = bystanders.to_vec();
            fields.push((claim, "forged"));
            let mut h = headers(&fields);
            apply(&mut h, &o, &mut Added::default());
            assert!(
                h.get(claim).is_none(),
                "{claim} passed from an untrusted peer"
            );
            assert_eq!(h.len(), bystanders.len(), "{claim}: {h:?}");
        }
    }

    #[test]
    fn a_trusted_proxys_unparsable_chain_is_refused_and_an_untrusted_ones_ignored() {
        let bad = headers(&[("x-forwarded-for", "198.51.100.7, not-an-ip")]);
        let good = headers(&[(
            "x-forwarded-for",
            "198.51.100.7, [2001:db8::1]:443, 10.0.0.2:80",
        )]);
        let empty = headers(&[("x-forwarded-for", "198.51.100.7,,10.0.0.2")]);
        assert!(unparsable_chain(peer("10.0.0.5"), &bad, &trusted()));
        assert!(unparsable_chain(peer("10.0.0.5"), &empty, &trusted()));
        assert!(!unparsable_chain(peer("10.0.0.5"), &good, &trusted()));
        assert!(!unparsable_chain(
            peer("10.0.0.5"),
            &HeaderMap::new(),
            &trusted()
        ));
        assert!(!unparsable_chain(peer("203.0.113.9"), &bad, &trusted()));
    }
}
