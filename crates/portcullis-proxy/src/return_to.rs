//! Where a browser may be sent after logging in.
//!
//! The return path travels through the login (in the `rd` parameter, a forward-auth
//! header, or the original request line) and ends up in a `Location` header. If an
//! attacker could choose it freely, a link to our login would bounce victims to their
//! site with our domain's credibility (an open redirect). So: relative paths only,
//! unless the host is explicitly allowed, and nothing a browser might read as another
//! origin. Browsers strip tabs and newlines from URLs and treat `\` like `/`, so
//! `/\evil.com` and `/<TAB>/evil.com` both mean `//evil.com`; and since the value may be
//! decoded again on its way, every percent-decoded layer is checked too. Dot segments
//! are refused, because `/%2e%2e//evil.com` resolves to `//evil.com`.

use percent_encoding::percent_decode_str;
use url::Url;

/// The longest return path kept; longer ones are replaced by `/`.
const MAX_LEN: usize = 4096;

/// How many layers of percent-encoding are peeled off and checked.
const DECODE_LAYERS: usize = 4;

/// Which absolute return URLs are acceptable.
#[derive(Debug, Clone, Default)]
pub struct ReturnRules {
    /// Lowercase host names allowed in absolute URLs, with `:port` when the port is not
    /// the scheme's default; `.example.com` allows every subdomain of example.com.
    pub allowed_hosts: Vec<String>,
}

/// Whether a layer of the value is safe to place in `Location` as a same-origin path.
fn is_safe_relative(layer: &str) -> bool {
    if layer.chars().any(|c| c.is_control()) {
        return false;
    }
    // What a browser would make of it: whitespace around and inside removed.
    let cleaned: String = layer.chars().filter(|c| !c.is_whitespace()).collect();
    let mut chars = cleaned.chars();
    let starts_well = match (chars.next(), chars.next()) {
        (Some('/'), Some('/' | '\\')) => false,
        (Some('/'), _) => true,
        _ => false,
    };
    // Dot segments are resolved by the browser (`/..//evil.com` becomes `//evil.com`);
    // a return path has no use for them.
    let path = cleaned.split(['?', '#']).next().unwrap_or("");
    starts_well && !path.split(['/', '\\']).any(|seg| seg == "." || seg == "..")
}

/// The layers a value could turn into if decoded again: itself, then each
/// percent-decoding until nothing changes.
fn layers(raw: &str) -> Vec<String> {
    let mut out = vec![raw.to_string()];
    for _ in 0..DECODE_LAYERS {
        let last = out.last().expect("starts with one layer");
        let next = percent_decode_str(last).decode_utf8_lossy().into_owned();
        if &next == last {
            break;
        }
        out.push(next);
    }
    out
}

/// Returns the value to redirect to, or `None` if it must not be used.
pub fn validate(raw: &str, rules: &ReturnRules) -> Option<String> {
    if raw.is_empty() || raw.len() > MAX_LEN || !raw.is_ascii() {
        return None;
    }
    if raw.starts_with('/') {
        return layers(raw)
            .iter()
            .all(|layer| is_safe_relative(layer))
            .then(|| raw.to_string());
    }
    absolute(raw, rules)
}

/// An absolute http(s) URL to an allowed host, with no credentials and no trickery in
/// any decoded layer.
fn absolute(raw: &str, rules: &ReturnRules) -> Option<String> {
    if rules.allowed_hosts.is_empty()
        || raw
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '\\')
    {
        return None;
    }
    let url = Url::parse(raw).ok()?;
    if !matches!(url.scheme(), "http" | "https")
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return None;
    }
    let host = url.host_str()?.to_ascii_lowercase();
    let with_port = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.clone(),
    };
    // `app.example.com` allows only the scheme's default port; other ports must be
    // listed as `host:port`.
    let allowed = rules.allowed_hosts.iter().any(|allowed| {
        *allowed == with_port
            || (allowed.starts_with('.')
                && url.port().is_none()
                && host.ends_with(allowed.as_str()))
    });
    // The path part must itself be a safe relative path in every layer.
    let path_ok = layers(url.path())
        .iter()
        .all(|layer| is_safe_relative(layer));
    (allowed && path_ok).then(|| url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> ReturnRules {
        ReturnRules {
            allowed_hosts: vec![
                "app.example.com".into(),
                "other.example.com:8443".into(),
                ".apps.example.org".into(),
            ],
        }
    }

    #[test]
    fn a_leading_dot_allows_subdomains_only() {
        for ok in [
            "https://grafana.apps.example.org/d/1",
            "https://a.b.apps.example.org/",
        ] {
            assert_eq!(validate(ok, &rules()).as_deref(), Some(ok), "{ok}");
        }
        for bad in [
            "https://apps.example.org/",
            "https://evilapps.example.org/",
            "https://grafana.apps.example.org.evil.com/",
            "https://grafana.apps.example.org:8443/",
        ] {
            assert_eq!(validate(bad, &rules()), None, "{bad}");
        }
    }

    #[test]
    fn ordinary_paths_are_kept_byte_for_byte() {
        for ok in [
            "/",
            "/dashboard",
            "/a/b?c=d&e=%2Ff#frag",
            "/search?q=hello%20world",
            "/files/%E2%9C%93.txt",
            "/path/with//double/slash/later",
            "/?next=//evil.com",
        ] {
            assert_eq!(validate(ok, &rules()).as_deref(), Some(ok), "{ok}");
        }
    }

    #[test]
    fn allowed_absolute_urls_pass_and_others_do_not() {
        assert!(validate("https://app.example.com/x", &rules()).is_some());
        assert!(validate("https://other.example.com:8443/x", &rules()).is_some());
        assert!(validate("https://other.example.com/x", &rules()).is_none());
        assert!(validate("https://evil.com/x", &rules()).is_none());
        assert!(validate("https://app.example.com@evil.com/", &rules()).is_none());
        assert!(validate("https://user:pw@app.example.com/", &rules()).is_none());
        assert!(validate("https://app.example.com//evil.com", &rules()).is_none());
        assert!(validate("https://app.example.com/x", &ReturnRules::default()).is_none());
    }

    #[test]
    fn the_corpus_of_redirect_payloads_is_refused() {
        let corpus: serde_json::Value = serde_json::from_str(include_str!(
            "../../../tests/data/open-redirect-payloads.json"
        ))
        .expect("the corpus is JSON");
        let payloads = corpus["payloads"].as_array().expect("a payload list");
        assert!(
            payloads.len() >= 200,
            "corpus has only {} payloads",
            payloads.len()
        );
        for payload in payloads {
            let payload = payload.as_str().expect("payloads are strings");
            assert_eq!(validate(payload, &rules()), None, "accepted {payload:?}");
        }
    }
}
