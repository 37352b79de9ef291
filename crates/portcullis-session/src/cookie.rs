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

/// Splits one `Cookie` header value into `(name, value)` pairs. Header values are
/// bytes: a cookie of the app's with non-ASCII in it must not hide the others on its line.
pub fn pairs(header: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    header.split(|&b| b == b';').filter_map(|pair| {
        let eq = pair.iter().position(|&b| b == b'=')?;
        Some((
            pair[..eq].trim_ascii(),
            unquoted(pair[eq + 1..].trim_ascii()),
        ))
    })
}

/// The value of cookie `name` in any of the given `Cookie` header values, if it is
/// ASCII (every cookie Portcullis sets is). When a browser sends the name twice (two
/// paths or domains), the first is used, as browsers order the most specific first.
///
/// Read as `pairs` reads a line, without splitting every pair into a name and a value:
/// this runs on every request.
pub fn find<'a>(headers: impl IntoIterator<Item = &'a [u8]>, name: &str) -> Option<&'a str> {
    let value = find_bytes(headers, name)?;
    std::str::from_utf8(value).ok().filter(|v| v.is_ascii())
}

/// [`find`]'s value as bytes, whatever they are: for a reader that checks them itself.
pub fn find_bytes<'a>(headers: impl IntoIterator<Item = &'a [u8]>, name: &str) -> Option<&'a [u8]> {
    let name = name.as_bytes();
    // A name with `=` or outer spaces could never equal what `pairs` reads as a name.
    if name.contains(&b'=') || name.trim_ascii().len() != name.len() {
        return None;
    }
    headers
        .into_iter()
        .flat_map(pieces)
        .find_map(|pair| value_if_named(pair, name))
}

/// What lies between the `;`s of a `Cookie` line, as `split` gives it (a trailing `;`
/// leaves an empty piece), each `;` found by `memchr` (a scan of many bytes at once)
/// rather than byte by byte: this runs on every request.
fn pieces(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(line);
    std::iter::from_fn(move || {
        let line = rest?;
        Some(match memchr::memchr(b';', line) {
            Some(at) => {
                rest = Some(&line[at + 1..]);
                &line[..at]
            }
            None => {
                rest = None;
                line
            }
        })
    })
}

/// The value of `pair` if its name is `name` (a name without `=` or outer spaces): the
/// name is what comes before the pair's first `=`, trimmed.
fn value_if_named<'a>(pair: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let rest = pair.trim_ascii_start().strip_prefix(name)?;
    let value = rest.trim_ascii_start().strip_prefix(b"=")?;
    Some(unquoted(value.trim_ascii()))
}

fn unquoted(value: &[u8]) -> &[u8] {
    value
        .strip_prefix(b"\"")
        .and_then(|v| v.strip_suffix(b"\""))
        .unwrap_or(value)
}

/// The `Cookie` header values joined into one (RFC 9113 §8.2.3: HTTP/2 cookie crumbs
/// are joined with `; ` before going on over HTTP/1.1) without the cookies `drop`
/// selects. `None` when there is nothing to change: one value and nothing dropped.
/// Otherwise the new value, empty when nothing is left. Pairs are kept byte for byte.
pub fn rewrite<'a, I: Iterator<Item = &'a [u8]>>(
    values: impl Fn() -> I,
    drop: impl Fn(&[u8]) -> bool,
) -> Option<Vec<u8>> {
    // One pass to learn what there is to do; a second only to build a new line.
    let (mut count, mut dropping, mut keeping) = (0, false, false);
    for value in values() {
        count += 1;
        for pair in pieces(value) {
            let pair = pair.trim_ascii();
            if pair.is_empty() {
                continue;
            }
            let (name, named) = pair_name(pair);
            let dropped = drop(name);
            // Only a pair with a name (`=`) makes a line worth rewriting.
            dropping |= dropped && named;
            keeping |= !dropped;
        }
    }
    if count <= 1 && !dropping {
        return None;
    }
    let mut out = Vec::new();
    if !keeping {
        return Some(out);
    }
    for pair in values().flat_map(pieces) {
        let pair = pair.trim_ascii();
        if pair.is_empty() || drop(pair_name(pair).0) {
            continue;
        }
        if !out.is_empty() {
            out.extend_from_slice(b"; ");
        }
        out.extend_from_slice(pair);
    }
    Some(out)
}

/// The name of a trimmed, non-empty pair (all of it when it has no `=`), and whether it
/// had an `=`.
fn pair_name(pair: &[u8]) -> (&[u8], bool) {
    match pair.iter().position(|&b| b == b'=') {
        Some(eq) => (pair[..eq].trim_ascii(), true),
        None => (pair, false),
    }
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
        let headers: [&[u8]; 3] = [b"a=1; b=2", b"session_token=first", b"session_token=second"];
        assert_eq!(find(headers, "session_token"), Some("first"));
        assert_eq!(find([&b"a=1;b=2"[..]], "b"), Some("2"));
        assert_eq!(find([&b"xsession_token=1"[..]], "session_token"), None);
    }

    #[test]
    fn a_non_ascii_cookie_does_not_hide_the_session() {
        let line = "app=caf\u{e9}; session_token=abc; other=\u{1F600}".as_bytes();
        assert_eq!(find([line], "session_token"), Some("abc"));
        assert_eq!(find([line], "app"), None, "non-ASCII values are not ours");
    }

    /// `find` and `rewrite` as they were written on `pairs`: the reading they must keep.
    fn find_by_pairs<'a>(headers: &[&'a [u8]], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .flat_map(|h| pairs(h))
            .find(|(n, _)| *n == name.as_bytes())
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
            .filter(|v| v.is_ascii())
    }

    fn rewrite_by_pairs(values: &[&[u8]], drop: impl Fn(&[u8]) -> bool) -> Option<Vec<u8>> {
        let dropping = values.iter().flat_map(|v| pairs(v)).any(|(n, _)| drop(n));
        if values.len() <= 1 && !dropping {
            return None;
        }
        let mut out = Vec::new();
        for pair in values.iter().flat_map(|v| v.split(|&b| b == b';')) {
            let pair = pair.trim_ascii();
            let name = pair
                .iter()
                .position(|&b| b == b'=')
                .map_or(pair, |eq| pair[..eq].trim_ascii());
            if pair.is_empty() || drop(name) {
                continue;
            }
            if !out.is_empty() {
                out.extend_from_slice(b"; ");
            }
            out.extend_from_slice(pair);
        }
        Some(out)
    }

    #[test]
    fn find_and_rewrite_read_lines_as_pairs_does() {
        // Lines drawn from the bytes that matter to the reading: separators, spaces,
        // quotes, a name's letters, non-ASCII, a control character.
        const BYTES: &[u8] = b"sa=; =\t\"x\xe9\x01ss";
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let names = ["s", "ss", "a", "", "s s", "s=", " s"];
        let ours = |n: &[u8]| n == b"s" || n.starts_with(b"ss");
        for _ in 0..20_000 {
            let lines: Vec<Vec<u8>> = (0..1 + next() % 3)
                .map(|_| {
                    (0..next() % 14)
                        .map(|_| BYTES[(next() % BYTES.len() as u64) as usize])
                        .collect()
                })
                .collect();
            let lines: Vec<&[u8]> = lines.iter().map(|l| l.as_slice()).collect();
            for name in names {
                assert_eq!(
                    find(lines.iter().copied(), name),
                    find_by_pairs(&lines, name),
                    "{lines:?} {name:?}"
                );
            }
            assert_eq!(
                rewrite(|| lines.iter().copied(), ours),
                rewrite_by_pairs(&lines, ours),
                "{lines:?}"
            );
        }
    }

    #[test]
    fn rewrite_joins_crumbs_and_removes_only_the_named_cookies() {
        let ours = |n: &[u8]| n == b"session_token";
        let one: [&[u8]; 1] = [b"a=1; b=2"];
        assert_eq!(rewrite(|| one.iter().copied(), ours), None, "nothing to do");
        let mixed: [&[u8]; 1] = [b"a=1; session_token=x; b=2"];
        assert_eq!(
            rewrite(|| mixed.iter().copied(), ours).unwrap(),
            b"a=1; b=2"
        );
        let only: [&[u8]; 1] = [b"session_token=x"];
        assert_eq!(rewrite(|| only.iter().copied(), ours).unwrap(), b"");
        let crumbs: [&[u8]; 3] = [b"a=1", "b=\u{e9}".as_bytes(), b"session_token=x;c=3"];
        assert_eq!(
            rewrite(|| crumbs.iter().copied(), ours).unwrap(),
            "a=1; b=\u{e9}; c=3".as_bytes()
        );
        let prefix: [&[u8]; 1] = [b"session_token_x=1;session_token=2"];
        assert_eq!(
            rewrite(|| prefix.iter().copied(), ours).unwrap(),
            b"session_token_x=1"
        );
    }
}
