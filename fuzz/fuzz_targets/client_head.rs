//! A client's HTTP/1.1 request head as Portcullis's own server path reads it, against
//! hyper's server: whatever the own path serves, hyper must accept and read the same
//! (method, target and every field); everything else is hyper's to answer.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = portcullis_proxy::fuzz_client_head(data) {
        panic!("{e}");
    }
});
