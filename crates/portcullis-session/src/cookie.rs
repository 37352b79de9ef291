//! The session cookie on the wire: finding it among a request's `Cookie` headers, building
//! its `Set-Cookie`, and removing it from what is forwarded to the upstream.
//!
//! RFC 6265 §4.2.1: `cookie-string = cookie-pair *( ";" SP cookie-pair )`; HTTP/2 clients
//! may also split cookies over several `cookie` header fields (RFC 9113 §8.2.3).

use std::time::Duration;

/// Attributes of the session cookie.
#[derive(Debug, Clone)]
pub struct CookieSpec {
    pub name: String,
    /// Set whenever the public URL is https.
    pub secure: bool,
    /// `Max-Age` of a fresh session cookie: the session lifetime.
    pub max_age: Duration,
    /// `Domain`, when the cookie must reach sibling hosts (forward-auth for several
    /// subdomains); `None` keeps it host-only.
    pub domain: Option<String>,
}

impl CookieSpec {
    /// `Set-Cookie` for a new session.
    pub fn set(&self, value: &str) -> String {
        format!(
            "{}={}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{}",
            self.name,
            value,
            self.max_age.as_secs(),
            self.tail()
        )
    }

    /// `Set-Cookie` that makes the browser forget the session cookie.
    pub fn clear(&self) -> String {
        format!(
            "{}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax{}",
            self.name,
            self.tail()
        )
    }

    fn tail(&self) -> String {
        let mut tail = String::new();
        if let Some(domain) = &self.domain {
            tail.push_str("; Domain=");
            tail.push_str(domain);
        }
        if self.secure {
            tail.push_str("; Secure");
        }
        tail
    }
}

/// Splits one `Cookie` header value into `(name, value)` pairs.
pub fn pairs(header: &str) -> impl Iterator<Item = (&str, &str)> {
    header.split(';').filter_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        Some((name.trim(), value.trim().trim_matches('"')))
    })
}

/// The value of cookie `name` in any of the given `Cookie` header values. When a browser
/// sends the name twice (two paths or domains), the first is used, as browsers order the
/// most specific first.
pub fn find<'a>(headers: impl IntoIterator<Item = &'a str>, name: &str) -> Option<&'a str> {
    headers
        .into_iter()
        .flat_map(pairs)
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// A `Cookie` header value without the cookies `drop` selects, or `None` when nothing
/// is left. Pairs are kept byte for byte otherwise.
pub fn without(header: &str, drop: impl Fn(&str) -> bool) -> Option<String> {
    let kept: Vec<&str> = header
        .split(';')
        .map(str::trim)
        .filter(|pair| {
            let name = pair.split_once('=').map_or(*pair, |(n, _)| n).trim();
            !pair.is_empty() && !drop(name)
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_cookie_has_the_secure_defaults() {
        let spec = CookieSpec {
            name: "session_token".into(),
            secure: true,
            max_age: Duration::from_secs(3600),
            domain: None,
        };
        assert_eq!(
            spec.set("abc"),
            "session_token=abc; Path=/; Max-Age=3600; HttpOnly; SameSite=Lax; Secure"
        );
        let plain = CookieSpec {
            secure: false,
            ..spec
        };
        assert!(!plain.set("abc").contains("Secure"));
        assert!(plain.clear().contains("Max-Age=0"));
        let shared = CookieSpec {
            domain: Some("example.com".into()),
            ..plain
        };
        assert_eq!(
            shared.clear(),
            "session_token=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax; Domain=example.com"
        );
    }

    #[test]
    fn find_looks_through_every_header_and_takes_the_first() {
        let headers = ["a=1; b=2", "session_token=first", "session_token=second"];
        assert_eq!(find(headers, "session_token"), Some("first"));
        assert_eq!(find(["a=1;b=2"], "b"), Some("2"));
        assert_eq!(find(["xsession_token=1"], "session_token"), None);
    }

    #[test]
    fn without_removes_only_the_named_cookies() {
        assert_eq!(
            without("a=1; session_token=x; b=2", |n| n == "session_token").as_deref(),
            Some("a=1; b=2")
        );
        assert_eq!(without("session_token=x", |n| n == "session_token"), None);
        assert_eq!(
            without("session_token_x=1;session_token=2", |n| n
                == "session_token")
            .as_deref(),
            Some("session_token_x=1")
        );
    }
}
