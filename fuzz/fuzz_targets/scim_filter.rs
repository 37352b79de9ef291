//! SCIM filters and PATCH paths, from the identity provider's requests: refused with a
//! SCIM error or parsed, never a panic or unbounded recursion.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_scim::filter::{parse_attr_path, parse_filter, parse_patch_path};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_filter(text);
    let _ = parse_patch_path(text);
    let _ = parse_attr_path(text);
});
