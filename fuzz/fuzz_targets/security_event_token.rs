//! The Security Event Token of Shared Signals, read as `Transmitter::verify` reads it
//! once the signature verifies (the header, then `iss`, `aud`, `iat`, `jti`, `events`,
//! and the subjects, nested to a bounded depth). The first byte picks the shape: the raw
//! token, or the rest as the payload JSON under a valid header. Garbage must be an
//! error, never a panic; an accepted token is the transmitter's, for this receiver.
#![no_main]

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;

const ISSUER: &str = "https://idp.example";

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
        let header = br#"{"alg":"RS256","typ":"secevent+jwt","kid":"k1"}"#;
        format!("{}.{}.c2ln", b64.encode(header), b64.encode(rest))
    };
    let audience = ["https://app.example".to_owned()];
    if let Ok(set) = portcullis_identity::ssf::read_unsigned(&token, ISSUER, &audience) {
        assert!(!set.jti.is_empty());
        assert!(!set.events.is_empty());
    }
});
