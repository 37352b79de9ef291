//! The Cookie header as the session lookup reads it: every pair, the session cookie
//! found by name, its id parsed, and the header rewritten without Portcullis's cookies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_session::{SessionId, cookie};

fuzz_target!(|data: &[u8]| {
    for (name, value) in cookie::pairs(data) {
        let _ = (name.len(), value.len());
    }
    if let Some(value) = cookie::find([data], "session_token") {
        if let Some(id) = SessionId::parse(value) {
            let _ = id.key();
        }
    }
    let _ = cookie::rewrite(|| std::iter::once(data), |name| name.starts_with(b"session"));
});
