//! Hop-by-hop header removal.
//!
//! RFC 9110 §7.6.1: "Intermediaries MUST parse a received Connection header field before
//! a message is forwarded and, for each connection-option in this field, remove any
//! header or trailer field(s) from the message with the same name as the
//! connection-option, and then remove the Connection header field itself (or replace it
//! with the intermediary's own control options for the forwarded message)." It also
//! names the fields that are connection-specific even when not listed: Proxy-Connection,
//! Keep-Alive, TE, Transfer-Encoding and Upgrade. RFC 9113 §3.2.1 (as RFC 7540 did) makes
//! `HTTP2-Settings` connection-specific too.
//!
//! Upgrades: only the protocols in the allow-list (WebSocket by default) are passed on.
//! `h2c` never is: an upstream that accepted it would turn the connection into an HTTP/2
//! tunnel whose streams Portcullis never sees, so no header rule, session check or policy
//! would apply to them.

use http::HeaderMap;
use http::header::{self, HeaderName};

/// The fields that are always connection-specific (RFC 9110 §7.6.1, and RFC 9113's
/// `HTTP2-Settings`), and the proxy credentials fields, which are addressed to Portcullis
/// and never to the upstream.
const ALWAYS_HOP_BY_HOP: [&str; 9] = [
    "connection",
    "proxy-authenticate",
    "proxy-connection",
    "keep-alive",
    "te",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "http2-settings",
];

/// Whether `name` is one of [`ALWAYS_HOP_BY_HOP`]: one match on the name's text, not a
/// comparison with each.
pub(crate) fn always_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "proxy-authenticate"
            | "proxy-connection"
            | "keep-alive"
            | "te"
            | "transfer-encoding"
            | "upgrade"
            | "proxy-authorization"
            | "http2-settings"
    )
}

/// Whether a comma-separated field value lists `token` (any case).
pub(crate) fn lists_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// Whether a `Connection` value names a field outside the fixed set (beyond an
/// upstream's usual `keep-alive`), which would have to be found and removed too.
pub(crate) fn lists_other_fields(connection: &[u8]) -> bool {
    connection
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .any(|token| {
            !token.is_empty()
                && !ALWAYS_HOP_BY_HOP
                    .iter()
                    .any(|always| token.eq_ignore_ascii_case(always.as_bytes()))
        })
}

/// Removes every hop-by-hop field: those listed in `Connection` and the fixed set.
///
/// One pass over the message's fields finds those to remove (a request usually has none;
/// an upstream's answer usually has only its `Connection: keep-alive`), so nothing is
/// hashed or allocated for names that are not there.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let names_others = headers
        .get_all(header::CONNECTION)
        .iter()
        .any(|v| lists_other_fields(v.as_bytes()));
    if !names_others {
        // `Connection` (if any) names only fields of the fixed set (an upstream's
        // `keep-alive`), so only those go: at most nine names, each found by one scan.
        while let Some(name) = headers.keys().find(|name| always_hop_by_hop(name)).cloned() {
            headers.remove(name);
        }
        return;
    }
    let connection = headers.get_all(header::CONNECTION);
    let goes = |name: &HeaderName| {
        always_hop_by_hop(name)
            || connection
                .iter()
                .flat_map(|v| v.as_bytes().split(|&b| b == b','))
                .any(|token| {
                    token
                        .trim_ascii()
                        .eq_ignore_ascii_case(name.as_str().as_bytes())
                })
    };
    // Collecting nothing allocates nothing.
    let doomed: Vec<HeaderName> = headers.keys().filter(|name| goes(name)).cloned().collect();
    for name in doomed {
        headers.remove(name);
    }
}

/// Field names a request must not carry on, with their lengths as a bit set: most of a
/// request's fields are ruled out by their length alone, without a name compared.
pub(crate) struct Names<const N: usize> {
    names: [HeaderName; N],
    lengths: u64,
}

impl<const N: usize> Names<N> {
    /// `names`: lowercase field names shorter than 64 bytes (anything else fails the
    /// build, where the set is a `static`).
    pub(crate) const fn new(names: [&'static str; N]) -> Self {
        let mut built = [const { HeaderName::from_static("x") }; N];
        let mut lengths = 0u64;
        let mut i = 0;
        while i < N {
            assert!(names[i].len() < 64, "a name of 64 bytes or more");
            lengths |= 1 << names[i].len();
            // The placeholder is a static name: nothing to drop.
            std::mem::forget(std::mem::replace(
                &mut built[i],
                HeaderName::from_static(names[i]),
            ));
            i += 1;
        }
        Names {
            names: built,
            lengths,
        }
    }

    #[cfg(test)]
    pub(crate) fn names(&self) -> &[HeaderName] {
        &self.names
    }

    fn lists(&self, name: &HeaderName) -> bool {
        let len = name.as_str().len();
        len < 64 && self.lengths & (1 << len) != 0 && self.names.contains(name)
    }

    /// Removes every field of these names: one pass over the request's few fields to see
    /// whether any is there (most requests carry none), instead of a lookup per name.
    pub(crate) fn remove_from(&self, headers: &mut HeaderMap) {
        if headers.keys().any(|k| self.lists(k)) {
            for name in &self.names {
                headers.remove(name);
            }
        }
    }
}

/// The protocol a request asks to switch to (RFC 9110 §7.8), if it is one of `allowed`
/// (lowercase names): `Connection` must list `upgrade`, and `Upgrade` must name exactly
/// one protocol. Anything else (no upgrade, `h2c`, a list of protocols) is `None`, and
/// the request is forwarded as a plain request without its upgrade fields.
pub(crate) fn upgrade_protocol(
    headers: &HeaderMap,
    allowed: &[String],
) -> Option<http::HeaderValue> {
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if !asks {
        return None;
    }
    let mut values = headers.get_all(header::UPGRADE).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return None;
    };
    let protocol = value.to_str().ok()?.trim();
    // `websocket/13` names a version; the allow-list names protocols.
    let name = protocol.split('/').next().unwrap_or("");
    allowed
        .iter()
        .any(|a| a.eq_ignore_ascii_case(name) && !a.eq_ignore_ascii_case("h2c"))
        .then(|| value.clone())
}

/// Whether an upstream's `101` switches to the protocol the client asked for.
pub(crate) fn upgrade_accepted(response: &HeaderMap, asked: &http::HeaderValue) -> bool {
    let name = |v: &[u8]| {
        let text = String::from_utf8_lossy(v);
        text.trim()
            .split('/')
            .next()
            .unwrap_or("")
            .to_ascii_lowercase()
    };
    response
        .get(header::UPGRADE)
        .is_some_and(|got| name(got.as_bytes()) == name(asked.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn the_fixed_set_is_matched_by_name() {
        for name in ALWAYS_HOP_BY_HOP {
            assert!(always_hop_by_hop(&HeaderName::from_static(name)), "{name}");
        }
        for name in [
            header::CONNECTION,
            header::PROXY_AUTHENTICATE,
            HeaderName::from_static("proxy-connection"),
            HeaderName::from_static("keep-alive"),
            header::TE,
            header::TRANSFER_ENCODING,
            header::UPGRADE,
            header::PROXY_AUTHORIZATION,
            HeaderName::from_static("http2-settings"),
        ] {
            assert!(always_hop_by_hop(&name), "{name}");
        }
        for name in [
            "connections",
            "keep-alive2",
            "t",
            "tee",
            "x-upgrade",
            "cookie",
            "host",
            "proxy-authorization-x",
        ] {
            let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
            assert!(!always_hop_by_hop(&name), "{name}");
        }
    }

    #[test]
    fn fields_named_in_connection_and_the_fixed_set_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("close, X-Secret-Hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert(
            "proxy-authorization",
            HeaderValue::from_static("Basic eA=="),
        );
        h.insert(
            "http2-settings",
            HeaderValue::from_static("AAMAAABkAARAAAAAAAIAAAAA"),
        );
        h.insert("x-kept", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-kept"], "yes");
    }

    #[test]
    fn every_connection_field_and_spelling_of_a_listed_name_counts() {
        let mut h = HeaderMap::new();
        h.append("connection", HeaderValue::from_static("keep-alive"));
        h.append("connection", HeaderValue::from_static(" ,X-One ,\tx-TWO,,"));
        h.insert("x-one", HeaderValue::from_static("1"));
        h.append("x-two", HeaderValue::from_static("2"));
        h.append("x-two", HeaderValue::from_static("22"));
        h.insert(
            "x-twofold",
            HeaderValue::from_static("kept: a prefix is not the name"),
        );
        h.insert("x-kept", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["x-kept", "x-twofold"]);
        // A message without a Connection field keeps everything but the fixed set.
        let mut h = HeaderMap::new();
        h.insert("x-kept", HeaderValue::from_static("yes"));
        h.insert("te", HeaderValue::from_static("trailers"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        // One that lists only fields of the fixed set (in any case, several times over)
        // loses every field of that set, listed or not, and nothing else.
        let mut h = HeaderMap::new();
        h.append(
            "connection",
            HeaderValue::from_static("Keep-Alive, UPGRADE"),
        );
        h.append("connection", HeaderValue::from_static("keep-alive"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.append("te", HeaderValue::from_static("trailers"));
        h.append("te", HeaderValue::from_static("gzip"));
        h.insert(
            "proxy-authorization",
            HeaderValue::from_static("Basic eA=="),
        );
        h.insert("x-kept", HeaderValue::from_static("yes"));
        h.insert("upgrade-insecure-requests", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["upgrade-insecure-requests", "x-kept"]);
    }

    #[test]
    fn upgrade_needs_both_fields() {
        let ws = vec!["websocket".to_string()];
        let mut h = HeaderMap::new();
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        assert_eq!(upgrade_protocol(&h, &ws), None);
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert_eq!(upgrade_protocol(&h, &ws).unwrap(), "websocket");
        h.insert("upgrade", HeaderValue::from_static("WebSocket"));
        assert_eq!(upgrade_protocol(&h, &ws).unwrap(), "WebSocket");
    }

    #[test]
    fn h2c_and_unlisted_protocols_are_never_upgraded() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("Upgrade, HTTP2-Settings"),
        );
        h.insert("upgrade", HeaderValue::from_static("h2c"));
        // Even an allow-list that names h2c does not pass it.
        let lists = [
            vec!["websocket".to_string()],
            vec!["h2c".to_string(), "websocket".to_string()],
        ];
        for allowed in &lists {
            assert_eq!(upgrade_protocol(&h, allowed), None);
        }
        h.insert("upgrade", HeaderValue::from_static("websocket, h2c"));
        assert_eq!(upgrade_protocol(&h, &lists[0]), None);
        h.insert("upgrade", HeaderValue::from_static("foo"));
        assert_eq!(upgrade_protocol(&h, &lists[0]), None);
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.append("upgrade", HeaderValue::from_static("h2c"));
        assert_eq!(upgrade_protocol(&h, &lists[0]), None, "two Upgrade fields");
    }

    #[test]
    fn a_101_must_switch_to_the_protocol_asked_for() {
        let asked = HeaderValue::from_static("websocket");
        let mut r = HeaderMap::new();
        assert!(!upgrade_accepted(&r, &asked));
        r.insert("upgrade", HeaderValue::from_static("h2c"));
        assert!(!upgrade_accepted(&r, &asked));
        r.insert("upgrade", HeaderValue::from_static("WebSocket"));
        assert!(upgrade_accepted(&r, &asked));
    }
}
