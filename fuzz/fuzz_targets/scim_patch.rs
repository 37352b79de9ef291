//! SCIM PATCH request bodies as the provider sends them (JSON): parsed or refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_scim::patch::PatchRequest;

fuzz_target!(|data: &[u8]| {
    if let Ok(body) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = PatchRequest::parse(&body);
    }
});
