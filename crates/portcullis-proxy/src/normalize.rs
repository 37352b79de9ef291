//! One canonical view of a request before anything decides on it: the request target,
//! the host, the path.
//!
//! The path a policy matched must be the path the app interprets, or a route rule can be
//! walked around (`/admin` refused, `/public/../admin` served). So the path is
//! normalized once, here, and that exact text is both what Portcullis routes on and what
//! it forwards: percent-encoded unreserved characters are decoded and other escapes
//! upper-cased (RFC 3986 §6.2.2), dot segments are removed (§5.2.4, with `%2e` counted as
//! a dot), and runs of `/` become one (as nginx's `merge_slashes`). What an app could
//! still read differently from Portcullis is refused with 400 rather than guessed at: an
//! encoded `/` or `\`, a raw `\`, an encoded NUL or control character, an escape that
//! decodes to another escape (`%252e`), bytes that are not UTF-8 (overlong forms such as
//! `%c0%ae`), and, where the rules say so, `;` path parameters.
//!
//! The host: RFC 9112 §3.2 makes a request without `Host` (HTTP/1.1), with two, or with
//! an invalid one a 400; RFC 9113 §8.3.1 forbids userinfo in `:authority`. Portcullis
//! also refuses the characters that some stacks read as a list or a path (`,`, `/`, `@`,
//! space). `CONNECT` and authority-form targets are not for a reverse proxy (405, 400).

use std::borrow::Cow;

use http::header;
use http::{Method, Version};

/// Why a request was refused before anything else looked at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Malformed {
    /// `CONNECT`: this is not a forward proxy.
    Connect,
    /// Not an origin-form (or absolute-form) target.
    Target,
    Host(&'static str),
    Path(&'static str),
}

impl Malformed {
    pub(crate) fn explain(self) -> &'static str {
        match self {
            Malformed::Connect => "CONNECT is not served: Portcullis is not a forward proxy",
            Malformed::Target => "the request target must be a path starting with /",
            Malformed::Host(why) | Malformed::Path(why) => why,
        }
    }
}

/// What a path may contain beyond the strict rules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PathRules {
    /// Accept `;` in a path segment (Java-style path parameters).
    pub allow_semicolon: bool,
}

/// Checks the method, target and host of a request.
pub(crate) fn check_request<B>(req: &http::Request<B>) -> Result<(), Malformed> {
    if req.method() == Method::CONNECT {
        return Err(Malformed::Connect);
    }
    if !req.uri().path().starts_with('/') {
        return Err(Malformed::Target);
    }
    check_host(req)
}

fn check_host<B>(req: &http::Request<B>) -> Result<(), Malformed> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(Malformed::Host("the request has more than one Host field"));
    }
    if let Some(h) = host
        && !valid_host(h.as_bytes())
    {
        return Err(Malformed::Host("the Host field is not a valid host[:port]"));
    }
    let authority = req.uri().authority().map(|a| a.as_str());
    if let Some(a) = authority {
        if a.contains('@') {
            return Err(Malformed::Host(
                "the authority must not carry user information",
            ));
        }
        if !valid_host(a.as_bytes()) {
            return Err(Malformed::Host("the authority is not a valid host[:port]"));
        }
        // An absolute-form target or HTTP/2's :authority names the host; a Host field
        // beside it must name the same one.
        if let Some(h) = host
            && !h.as_bytes().eq_ignore_ascii_case(a.as_bytes())
        {
            return Err(Malformed::Host(
                "the Host field and the request's authority disagree",
            ));
        }
    }
    match req.version() {
        Version::HTTP_11 if host.is_none() && authority.is_none() => {
            Err(Malformed::Host("an HTTP/1.1 request needs a Host field"))
        }
        Version::HTTP_2 | Version::HTTP_3 if host.is_none() && authority.is_none() => {
            Err(Malformed::Host("the request names no authority"))
        }
        _ => Ok(()),
    }
}

/// `host [":" port]` where host is a name or IPv4 address of letters, digits, `-`, `.`,
/// `_` and `~`, or a bracketed IPv6 literal. Stricter than RFC 3986's reg-name: no
/// sub-delimiters and no percent-escapes, which no real host needs.
pub(crate) fn valid_host(value: &[u8]) -> bool {
    if value.is_empty() || value.len() > 261 {
        return false;
    }
    let (host, port) = if value[0] == b'[' {
        let Some(end) = value.iter().position(|&b| b == b']') else {
            return false;
        };
        let literal = &value[1..end];
        if literal.is_empty()
            || !literal
                .iter()
                .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'))
        {
            return false;
        }
        match &value[end + 1..] {
            [] => (&value[..=end], None),
            [b':', port @ ..] => (&value[..=end], Some(port)),
            _ => return false,
        }
    } else {
        match value.iter().position(|&b| b == b':') {
            Some(i) => (&value[..i], Some(&value[i + 1..])),
            None => (value, None),
        }
    };
    let name_ok = host[0] == b'['
        || (!host.is_empty()
            && host
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')));
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.iter().all(u8::is_ascii_digit));
    name_ok && port_ok
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// The canonical form of an origin-form path (no query), or why it is refused.
/// Borrowed when the path is already canonical, which is the common case.
pub(crate) fn normalize_path(raw: &str, rules: PathRules) -> Result<Cow<'_, str>, Malformed> {
    if already_canonical(raw, rules) {
        return Ok(Cow::Borrowed(raw));
    }
    canonical_form(raw, rules)
}

/// Whether `raw` is its own canonical form, decided in one pass that allocates nothing:
/// it starts with `/`, holds only printable ASCII other than `%`, `\` and (unless
/// allowed) `;`, and has no empty, `.` or `..` segment but the empty one a trailing `/`
/// leaves. Anything else takes the full path through [`canonical_form`], which agrees on
/// every path this accepts (a test walks every short path to check).
fn already_canonical(raw: &str, rules: PathRules) -> bool {
    let Some(inner) = raw.strip_prefix('/') else {
        return false;
    };
    let printable = raw.bytes().all(|b| {
        (0x21..0x7f).contains(&b) && b != b'%' && b != b'\\' && (b != b';' || rules.allow_semicolon)
    });
    if !printable {
        return false;
    }
    if inner.is_empty() {
        return true;
    }
    inner
        .strip_suffix('/')
        .unwrap_or(inner)
        .split('/')
        .all(|segment| !matches!(segment, "" | "." | ".."))
}

/// The canonical form, however the path is written: escapes decoded where they may be
/// and refused where they must be, dot segments resolved, empty segments dropped.
fn canonical_form(raw: &str, rules: PathRules) -> Result<Cow<'_, str>, Malformed> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(Malformed::Target);
    }
    // Pass 1: decode what may be decoded, refuse what must be; collect segments.
    let mut decoded: Vec<u8> = Vec::with_capacity(bytes.len());
    // Percent-decoded bytes of the current run, to check they form UTF-8.
    let mut run: Vec<u8> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) else {
                return Err(Malformed::Path("the path has a malformed percent-escape"));
            };
            let v = hi << 4 | lo;
            match v {
                b'/' | b'\\' => {
                    return Err(Malformed::Path(
                        "the path has an encoded / or \\, which the app could read as a separator",
                    ));
                }
                0..=0x1f | 0x7f => {
                    return Err(Malformed::Path(
                        "the path has an encoded NUL or control character",
                    ));
                }
                b'%' => {
                    return Err(Malformed::Path(
                        "the path is encoded twice (%25), so the app could decode it into something else",
                    ));
                }
                b';' if !rules.allow_semicolon => {
                    return Err(Malformed::Path("the path has a ; parameter"));
                }
                _ => {}
            }
            if v >= 0x80 {
                run.push(v);
                push_escape(&mut decoded, v);
            } else {
                check_utf8(&mut run)?;
                if unreserved(v) {
                    decoded.push(v);
                } else {
                    push_escape(&mut decoded, v);
                }
            }
            i += 3;
            continue;
        }
        check_utf8(&mut run)?;
        match b {
            b'\\' => {
                return Err(Malformed::Path(
                    "the path has a \\, which some apps read as /",
                ));
            }
            b';' if !rules.allow_semicolon => {
                return Err(Malformed::Path("the path has a ; parameter"));
            }
            0..=0x20 | 0x7f => {
                return Err(Malformed::Path("the path has a space or control character"));
            }
            _ => decoded.push(b),
        }
        i += 1;
    }
    check_utf8(&mut run)?;
    if std::str::from_utf8(&decoded).is_err() {
        return Err(Malformed::Path("the path is not UTF-8"));
    }
    // Pass 2: segments, without empty ones and dot segments.
    let text = String::from_utf8(decoded).map_err(|_| Malformed::Path("the path is not UTF-8"))?;
    let trailing = text.ends_with('/');
    let mut out: Vec<&str> = Vec::new();
    for segment in text.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut canonical = String::with_capacity(text.len());
    for s in &out {
        canonical.push('/');
        canonical.push_str(s);
    }
    let last_was_dot = text
        .rsplit('/')
        .next()
        .is_some_and(|s| s == "." || s == "..");
    if canonical.is_empty() || trailing || last_was_dot {
        canonical.push('/');
    }
    if canonical == raw {
        Ok(Cow::Borrowed(raw))
    } else {
        Ok(Cow::Owned(canonical))
    }
}

/// `%XX` in upper case (RFC 3986 §6.2.2.1).
fn push_escape(out: &mut Vec<u8>, v: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.extend_from_slice(&[b'%', HEX[usize::from(v >> 4)], HEX[usize::from(v & 15)]]);
}

/// Fails if the collected percent-decoded high bytes are not UTF-8, and starts a new run.
fn check_utf8(run: &mut Vec<u8>) -> Result<(), Malformed> {
    if run.is_empty() {
        return Ok(());
    }
    let ok = std::str::from_utf8(run).is_ok();
    run.clear();
    if ok {
        Ok(())
    } else {
        Err(Malformed::Path(
            "the path has percent-escapes that are not UTF-8 (such as an overlong form)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(raw: &str) -> Result<String, Malformed> {
        normalize_path(raw, PathRules::default()).map(Cow::into_owned)
    }

    #[test]
    fn the_quick_check_agrees_with_the_full_form_on_every_short_path() {
        // Every path of up to six characters over an alphabet of what matters to the
        // canonical form (separators, dots, escapes, a parameter, a backslash, a space,
        // a letter): wherever the quick check says "already canonical", the full
        // algorithm must give the path back unchanged.
        const ALPHABET: &[u8] = b"/.a%2F;\\ ";
        let mut quick = 0usize;
        for len in 1..=6u32 {
            for mut n in 0..ALPHABET.len().pow(len) {
                let mut path = String::new();
                for _ in 0..len {
                    path.push(char::from(ALPHABET[n % ALPHABET.len()]));
                    n /= ALPHABET.len();
                }
                for allow_semicolon in [false, true] {
                    let rules = PathRules { allow_semicolon };
                    if already_canonical(&path, rules) {
                        quick += 1;
                        assert_eq!(
                            canonical_form(&path, rules).map(Cow::into_owned),
                            Ok(path.clone()),
                            "{path:?}"
                        );
                    }
                }
            }
        }
        // The check is not vacuous: it takes a good share of the plain paths.
        assert!(quick > 1_000, "{quick}");
    }

    #[test]
    fn canonical_paths_pass_untouched_and_borrowed() {
        for p in [
            "/",
            "/a",
            "/a/b/",
            "/a%20b",
            "/%C3%A9t%C3%A9",
            "/x-y_z.~1",
            "/a?b",
        ] {
            assert!(
                matches!(
                    normalize_path(p, PathRules::default()),
                    Ok(Cow::Borrowed(_))
                ),
                "{p}"
            );
        }
    }

    #[test]
    fn dot_segments_and_repeated_slashes_are_resolved() {
        assert_eq!(norm("/a/./b").unwrap(), "/a/b");
        assert_eq!(norm("/a/../admin").unwrap(), "/admin");
        assert_eq!(norm("/../../admin").unwrap(), "/admin");
        assert_eq!(norm("/public/%2e%2e/admin").unwrap(), "/admin");
        assert_eq!(norm("/public/%2E./admin").unwrap(), "/admin");
        assert_eq!(norm("/public/.%2e/admin/").unwrap(), "/admin/");
        assert_eq!(norm("//admin").unwrap(), "/admin");
        assert_eq!(norm("/admin//x///").unwrap(), "/admin/x/");
        assert_eq!(norm("/a/b/..").unwrap(), "/a/");
        assert_eq!(norm("/a/.").unwrap(), "/a/");
        assert_eq!(norm("/%61dmin").unwrap(), "/admin");
        assert_eq!(norm("/a%7eb").unwrap(), "/a~b");
        assert_eq!(norm("/a%3fb").unwrap(), "/a%3Fb");
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        for bad in [
            "/admin%2f",
            "/x/%2F../admin",
            "/x%5cadmin",
            "/x\\admin",
            "/admin%00",
            "/admin%0a",
            "/%252e%252e/admin",
            "/%25",
            "/%c0%ae%c0%ae/admin",
            "/%e0%80%ae/admin",
            "/%ff",
            "/admin;jsessionid=1",
            "/admin%3bx",
            "/%zz",
            "/%2",
            "relative",
            "*",
        ] {
            assert!(norm(bad).is_err(), "{bad} was accepted as {:?}", norm(bad));
        }
        assert_eq!(
            normalize_path(
                "/a;b=1",
                PathRules {
                    allow_semicolon: true
                }
            )
            .unwrap(),
            "/a;b=1"
        );
    }

    #[test]
    fn hosts_are_names_or_addresses_with_a_port() {
        for good in [
            "example.com",
            "app.example.com:8443",
            "127.0.0.1",
            "[::1]:8080",
            "[2001:db8::1]",
            "localhost",
        ] {
            assert!(valid_host(good.as_bytes()), "{good}");
        }
        for bad in [
            "",
            "a b",
            "a/b",
            "user@host",
            "a,b",
            "host:",
            "host:99999x",
            "[::1",
            "[::1]x",
            "ex\tample",
            "host:80:80",
        ] {
            assert!(!valid_host(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn requests_without_one_valid_host_are_refused() {
        let ok = http::Request::get("/x")
            .header("host", "app.example.com")
            .body(())
            .unwrap();
        assert_eq!(check_request(&ok), Ok(()));
        let none = http::Request::get("/x").body(()).unwrap();
        assert!(matches!(check_request(&none), Err(Malformed::Host(_))));
        let two = http::Request::get("/x")
            .header("host", "a.example.com")
            .header("host", "b.example.com")
            .body(())
            .unwrap();
        assert!(matches!(check_request(&two), Err(Malformed::Host(_))));
        let h2 = http::Request::get("https://user@app.example.com/x")
            .version(Version::HTTP_2)
            .body(())
            .unwrap();
        assert!(matches!(check_request(&h2), Err(Malformed::Host(_))));
        let mismatch = http::Request::get("http://a.example.com/x")
            .header("host", "b.example.com")
            .body(())
            .unwrap();
        assert!(matches!(check_request(&mismatch), Err(Malformed::Host(_))));
        let connect = http::Request::connect("a.example.com:443")
            .header("host", "a.example.com:443")
            .body(())
            .unwrap();
        assert_eq!(check_request(&connect), Err(Malformed::Connect));
        let http10 = http::Request::get("/x")
            .version(Version::HTTP_10)
            .body(())
            .unwrap();
        assert_eq!(check_request(&http10), Ok(()));
    }
}
