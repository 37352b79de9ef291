//! The first look at a bearer token or ID token, before any key is chosen: which provider
//! issued it (the unverified `iss`). Garbage must be `None`, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(token) = std::str::from_utf8(data) {
        let _ = portcullis_identity::unverified_issuer(token);
    }
});
