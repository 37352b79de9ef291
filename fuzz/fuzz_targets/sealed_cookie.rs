//! The sealed cookies' decoder (the login-state cookie, a cookie-held session): any
//! value a client sends is opened, and fails, without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_core::seal::Sealer;

fuzz_target!(|data: &[u8]| {
    let sealer = Sealer::new(&[b"fuzz-cookie-secret-0123456789abcdef".as_slice()], "login-state");
    if let Ok(text) = std::str::from_utf8(data) {
        assert!(sealer.open(b"state", text).is_none(), "a forged value opened");
    }
});
