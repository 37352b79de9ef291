//! Hop-by-hop header removal.
//!
//! RFC 9110 §7.6.1: "Intermediaries MUST parse a received Connection header field before
//! a message is forwarded and, for each connection-option in this field, remove any
//! header or trailer field(s) from the message with the same name as the
//! connection-option, and then remove the Connection header field itself (or replace it
//! with the intermediary's own control options for the forwarded message)." It also
//! names the fields that are connection-specific even when not listed: Proxy-Connection,
//! Keep-Alive, TE, Transfer-Encoding and Upgrade.

use http::HeaderMap;
use http::header::{self, HeaderName};

/// Fields that are always connection-specific (RFC 9110 §7.6.1), plus the proxy
/// credentials fields, which are addressed to Portcullis and never to the upstream.
const ALWAYS_HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("keep-alive"),
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
];

/// Removes every hop-by-hop field: those listed in `Connection` and the fixed set.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Fast path: most requests carry no `Connection` field at all.
    if headers.contains_key(header::CONNECTION) {
        let listed: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in listed {
            headers.remove(name);
        }
    }
    for name in &ALWAYS_HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::PROXY_AUTHENTICATE);
}

/// The protocol a request asks to switch to (RFC 9110 §7.8), for WebSocket proxying:
/// `Connection` must list `upgrade` and `Upgrade` must be present.
pub fn upgrade_protocol(headers: &HeaderMap) -> Option<http::HeaderValue> {
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if asks {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

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
        h.insert("x-kept", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-kept"], "yes");
    }

    #[test]
    fn upgrade_needs_both_fields() {
        let mut h = HeaderMap::new();
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        assert_eq!(upgrade_protocol(&h), None);
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert_eq!(upgrade_protocol(&h).unwrap(), "websocket");
    }
}
