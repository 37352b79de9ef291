//! Forward-auth's reading of the original URL a proxy in front sends (`X-Original-URL`,
//! `X-Forwarded-Uri`, Envoy's path suffix) and of the verify URL's per-location query.
//! The input is `url`, then a newline, then `query`. Never a panic; a path the decision
//! takes has no dot segments and no encoded slash left; an absolute URL's host is the
//! one a WHATWG parser finds.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (url, query) = text.split_once('\n').unwrap_or((text, ""));
    let (host, path, _location) =
        portcullis_proxy::fuzzing::forward_auth_original(url, "app.example.com", query);
    if let Ok(path) = path {
        assert!(path.starts_with('/'), "{path:?}");
        for segment in path.split('/').skip(1) {
            assert!(segment != "." && segment != "..", "{path:?}");
        }
        let lower = path.to_ascii_lowercase();
        assert!(!lower.contains("%2f") && !lower.contains("%5c"), "{path:?}");
    }
    if !url.starts_with('/')
        && let Ok(parsed) = url::Url::parse(url)
        && let Some(found) = parsed.host_str()
    {
        let host = host.expect("an absolute URL with a host names it");
        assert!(host == found || host.starts_with(&format!("{found}:")), "{host} vs {found}");
    }
});
