//! The request-path normalizer: the path routes decide on is the path forwarded, so a
//! path it accepts must be canonical (no dot segments, no empty segments, no encoded
//! slash or dot left to be decoded into one later).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    for allow_semicolon in [false, true] {
        let Ok(path) = portcullis_proxy::fuzzing::normalize_path(raw, allow_semicolon) else {
            continue;
        };
        assert!(path.starts_with('/'), "{raw:?} -> {path:?}");
        assert!(!path.contains("//"), "{raw:?} -> {path:?}");
        for segment in path.split('/') {
            assert!(segment != "." && segment != "..", "{raw:?} -> {path:?}");
        }
        let lower = path.to_ascii_lowercase();
        assert!(!lower.contains("%2f") && !lower.contains("%5c"), "{raw:?} -> {path:?}");
        // Normalizing again changes nothing.
        assert_eq!(
            portcullis_proxy::fuzzing::normalize_path(&path, allow_semicolon).as_deref(),
            Ok(path.as_str()),
            "{raw:?}"
        );
    }
});
