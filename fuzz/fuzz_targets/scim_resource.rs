//! SCIM resource bodies (POST and PUT of Users and Groups) as the provider sends them,
//! and the `attributes` / `excludedAttributes` lists of a query: the first byte picks
//! User or Group, the rest is the JSON body (or, when it is not JSON, the attribute
//! lists, split at a newline). Read or refused, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_scim::resource::{Projection, normalize};
use portcullis_scim::schema::{GROUP, USER};

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let kind = if kind % 2 == 0 { &USER } else { &GROUP };
    match serde_json::from_slice::<serde_json::Value>(rest) {
        Ok(serde_json::Value::Object(body)) => {
            let _ = normalize(kind, &body);
        }
        Ok(_) => {}
        Err(_) => {
            if let Ok(text) = std::str::from_utf8(rest) {
                let (include, exclude) = text.split_once('\n').unwrap_or((text, ""));
                let _ = Projection::parse(Some(include), Some(exclude));
            }
        }
    }
});
