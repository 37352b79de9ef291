//! The upstream's response as Portcullis reads it (head, framing, chunked decoding):
//! bytes from the upstream get an answer or an error, never a panic, and the outcome
//! does not depend on how the bytes were split across reads.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, bytes)) = data.split_first() else {
        return;
    };
    let whole = portcullis_proxy::fuzz_upstream_response(bytes, bytes.len());
    let split = portcullis_proxy::fuzz_upstream_response(bytes, usize::from(split) * 16);
    assert_eq!(whole.as_ref().ok(), split.as_ref().ok(), "{whole:?} vs {split:?}");
    assert_eq!(whole.is_ok(), split.is_ok(), "{whole:?} vs {split:?}");
});
