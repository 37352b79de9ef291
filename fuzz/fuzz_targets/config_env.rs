//! The configuration reader fed environment variables (`NAME=value` lines): a valid
//! configuration or errors naming keys, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_config::{Sources, load};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let _ = load(&Sources {
        env,
        ..Sources::default()
    });
});
