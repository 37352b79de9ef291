//! The back-channel logout token, read as `verify_logout_token` reads it once the
//! signature verifies (the `typ`, then the claims: `iat`, `jti`, the event, no `nonce`,
//! `sub` or `sid`). The first byte picks the shape: the raw token, or the rest as the
//! payload JSON under a valid header, so the claims reading is reached directly. Garbage
//! must be an error, never a panic; an accepted token names a session or a user and has a
//! `jti`.
#![no_main]

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let token = if mode % 2 == 0 {
        let Ok(text) = std::str::from_utf8(rest) else {
            return;
        };
        text.to_owned()
    } else {
        let header = br#"{"alg":"ES256","typ":"logout+jwt","kid":"k1"}"#;
        format!("{}.{}.c2ln", b64.encode(header), b64.encode(rest))
    };
    if let Ok(t) = portcullis_identity::read_unsigned_logout_token(&token) {
        assert!(t.sub.is_some() || t.sid.is_some());
        assert!(!t.jti.is_empty());
    }
});
